//! The replicated cluster state: what the feed describes. The authority holds
//! the master copy; every node's replica is built from a snapshot plus entries.

use crate::feed::{Change, Snapshot};
use crate::ids::NodeId;
use crate::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub registry: Registry,
    /// Observers assigned to each subject.
    pub observers: BTreeMap<NodeId, Vec<NodeId>>,
    /// Nodes the authority has published as down.
    pub down: BTreeSet<NodeId>,
    /// Reverse of `observers`: the subjects each node observes.
    observing: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl ClusterState {
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::NodeUpserted(info) => self.registry.upsert(info.clone()),
            Change::NodeRemoved(id) => {
                self.registry.remove(*id);
                self.set_observers(*id, Vec::new());
                self.down.remove(id);
            }
            Change::Observers { subject, observers } => {
                self.set_observers(*subject, observers.clone());
            }
            Change::Health { node, down } => {
                if *down {
                    self.down.insert(*node);
                } else {
                    self.down.remove(node);
                }
            }
        }
    }

    fn set_observers(&mut self, subject: NodeId, observers: Vec<NodeId>) {
        let old = if observers.is_empty() {
            self.observers.remove(&subject)
        } else {
            self.observers.insert(subject, observers)
        };
        for o in old.iter().flatten() {
            if let Some(set) = self.observing.get_mut(o) {
                set.remove(&subject);
                if set.is_empty() {
                    self.observing.remove(o);
                }
            }
        }
        for o in self.observers.get(&subject).into_iter().flatten() {
            self.observing.entry(*o).or_default().insert(subject);
        }
    }

    pub fn is_down(&self, id: NodeId) -> bool {
        self.down.contains(&id)
    }

    pub fn observers_of(&self, subject: NodeId) -> &[NodeId] {
        self.observers.get(&subject).map_or(&[], |v| v.as_slice())
    }

    /// Subjects that `observer` is assigned to probe.
    pub fn subjects_of(&self, observer: NodeId) -> Vec<NodeId> {
        self.observing
            .get(&observer)
            .map_or_else(Vec::new, |s| s.iter().copied().collect())
    }

    pub fn snapshot(&self, seq: u64) -> Snapshot {
        Snapshot {
            seq,
            nodes: self.registry.iter().cloned().collect(),
            observers: self
                .observers
                .iter()
                .map(|(s, o)| (*s, o.clone()))
                .collect(),
            down: self.down.iter().copied().collect(),
        }
    }

    pub fn from_snapshot(snap: &Snapshot) -> ClusterState {
        let mut state = ClusterState::default();
        for info in &snap.nodes {
            state.registry.upsert(info.clone());
        }
        for (s, o) in &snap.observers {
            state.set_observers(*s, o.clone());
        }
        state.down = snap.down.iter().copied().collect();
        state
    }

    /// Order-independent fingerprint used to compare replicas with the
    /// authority (equal states have equal digests).
    pub fn digest(&self) -> u64 {
        use crate::rng::mix64;
        let mut h = 0u64;
        for n in self.registry.iter() {
            h = mix64(h ^ n.id.0);
            h = mix64(h ^ u64::from(n.addr.port()));
            for b in n.addr.ip().to_string().bytes().chain(n.zone.0.bytes()) {
                h = mix64(h ^ u64::from(b));
            }
            h = mix64(h ^ u64::from(n.roles.authority) ^ (u64::from(n.roles.store) << 1));
            h = mix64(h ^ (u64::from(n.roles.prism) << 2));
        }
        for (s, obs) in &self.observers {
            h = mix64(h ^ s.0 ^ 0x5151);
            for o in obs {
                h = mix64(h ^ o.0);
            }
        }
        for d in &self.down {
            h = mix64(h ^ d.0 ^ 0xd0d0);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeInfo, Roles, Zone};

    fn info(id: u64) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            addr: format!("10.0.0.{id}:7000").parse().unwrap(),
            roles: Roles::STORE,
            zone: Zone::new("z"),
        }
    }

    #[test]
    fn snapshot_round_trip_preserves_state_and_digest() {
        let mut s = ClusterState::default();
        for c in [
            Change::NodeUpserted(info(1)),
            Change::NodeUpserted(info(2)),
            Change::Observers {
                subject: NodeId(1),
                observers: vec![NodeId(2)],
            },
            Change::Health {
                node: NodeId(2),
                down: true,
            },
        ] {
            s.apply(&c);
        }
        let back = ClusterState::from_snapshot(&s.snapshot(4));
        assert_eq!(back.digest(), s.digest());
        assert_eq!(back.down, s.down);
        assert_eq!(back.observers, s.observers);
        assert_eq!(s.subjects_of(NodeId(2)), vec![NodeId(1)]);
        assert_eq!(back.subjects_of(NodeId(2)), vec![NodeId(1)]);
        s.apply(&Change::Observers {
            subject: NodeId(1),
            observers: vec![],
        });
        assert!(s.subjects_of(NodeId(2)).is_empty());
    }

    #[test]
    fn removing_a_node_clears_its_verdict_and_observers() {
        let mut s = ClusterState::default();
        s.apply(&Change::NodeUpserted(info(1)));
        s.apply(&Change::Health {
            node: NodeId(1),
            down: true,
        });
        let before = s.digest();
        s.apply(&Change::NodeRemoved(NodeId(1)));
        assert!(!s.is_down(NodeId(1)));
        assert!(s.registry.is_empty());
        assert_ne!(before, s.digest());
    }
}
