//! The node registry: who is in the cluster, where, in which zone, with which
//! roles. The authority holds the master copy; every node a replica.

use crate::feed::Change;
use crate::ids::{NodeId, NodeInfo};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    nodes: BTreeMap<NodeId, NodeInfo>,
    /// Bumped whenever the set of members or a member's zone changes, which is
    /// what observer assignment depends on (an address change is not).
    membership_version: u64,
}

impl Registry {
    pub fn get(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn membership_version(&self) -> u64 {
        self.membership_version
    }

    /// The change a join request implies: none if the node is already
    /// registered exactly so (joins are idempotent by node id), an upsert if it
    /// is new or its address, roles or zone changed.
    pub fn join_change(&self, info: &NodeInfo) -> Option<Change> {
        match self.nodes.get(&info.id) {
            Some(known) if known == info => None,
            _ => Some(Change::NodeUpserted(info.clone())),
        }
    }

    /// The change a leave implies: none for a node that is not registered.
    pub fn leave_change(&self, id: NodeId) -> Option<Change> {
        self.nodes
            .contains_key(&id)
            .then_some(Change::NodeRemoved(id))
    }

    pub(crate) fn upsert(&mut self, info: NodeInfo) {
        let membership_changes = self.nodes.get(&info.id).is_none_or(|k| k.zone != info.zone);
        if membership_changes {
            self.membership_version += 1;
        }
        self.nodes.insert(info.id, info);
    }

    pub(crate) fn remove(&mut self, id: NodeId) {
        if self.nodes.remove(&id).is_some() {
            self.membership_version += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Roles, Zone};
    use proptest::prelude::*;
    use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

    fn info(id: u64, port: u16, zone: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            addr: format!("10.0.0.1:{port}").parse().unwrap(),
            roles: Roles::STORE,
            zone: Zone::new(zone),
            weight: 100,
            incarnation: 0,
        }
    }

    fn apply(reg: &mut Registry, change: Change) {
        match change {
            Change::NodeUpserted(i) => reg.upsert(i),
            Change::NodeRemoved(id) => reg.remove(id),
            other => panic!("registry produced {other:?}"),
        }
    }

    #[test]
    fn rejoin_with_same_info_changes_nothing() {
        let mut reg = Registry::default();
        let a = info(1, 7000, "z1");
        let c = reg.join_change(&a).unwrap();
        apply(&mut reg, c);
        assert_eq!(reg.join_change(&a), None);
        assert_eq!(reg.membership_version(), 1);
    }

    #[test]
    fn new_address_updates_without_touching_membership() {
        let mut reg = Registry::default();
        let c = reg.join_change(&info(1, 7000, "z1")).unwrap();
        apply(&mut reg, c);
        let moved = info(1, 7001, "z1");
        let c = reg.join_change(&moved).unwrap();
        apply(&mut reg, c);
        assert_eq!(reg.get(NodeId(1)).unwrap().addr.port(), 7001);
        assert_eq!(reg.membership_version(), 1);
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn leave_of_unknown_node_is_no_change() {
        let reg = Registry::default();
        assert_eq!(reg.leave_change(NodeId(5)), None);
    }

    // Model-based test: the registry against a plain map.

    #[derive(Clone, Debug)]
    enum Op {
        Join { id: u64, port: u16, zone: u8 },
        Leave { id: u64 },
    }

    #[derive(Clone, Debug, Default)]
    struct Model {
        nodes: BTreeMap<u64, (u16, u8)>,
        membership_changes: u64,
    }

    struct RegistryModel;

    impl ReferenceStateMachine for RegistryModel {
        type State = Model;
        type Transition = Op;

        fn init_state() -> BoxedStrategy<Model> {
            Just(Model::default()).boxed()
        }

        fn transitions(_: &Model) -> BoxedStrategy<Op> {
            prop_oneof![
                3 => (0u64..6, 7000u16..7003, 0u8..3)
                    .prop_map(|(id, port, zone)| Op::Join { id, port, zone }),
                1 => (0u64..6).prop_map(|id| Op::Leave { id }),
            ]
            .boxed()
        }

        fn apply(mut m: Model, op: &Op) -> Model {
            match *op {
                Op::Join { id, port, zone } => {
                    if m.nodes.get(&id).is_none_or(|&(_, z)| z != zone) {
                        m.membership_changes += 1;
                    }
                    m.nodes.insert(id, (port, zone));
                }
                Op::Leave { id } => {
                    if m.nodes.remove(&id).is_some() {
                        m.membership_changes += 1;
                    }
                }
            }
            m
        }
    }

    impl StateMachineTest for RegistryModel {
        type SystemUnderTest = Registry;
        type Reference = RegistryModel;

        fn init_test(_: &Model) -> Registry {
            Registry::default()
        }

        fn apply(mut reg: Registry, model: &Model, op: Op) -> Registry {
            let change = match op {
                Op::Join { id, port, zone } => {
                    let i = info(id, port, &format!("z{zone}"));
                    let before = reg.get(NodeId(id)).cloned();
                    let change = reg.join_change(&i);
                    // Idempotence: a change exactly when something differs.
                    assert_eq!(change.is_none(), before.as_ref() == Some(&i));
                    change
                }
                Op::Leave { id } => {
                    let change = reg.leave_change(NodeId(id));
                    assert_eq!(change.is_some(), reg.contains(NodeId(id)));
                    change
                }
            };
            if let Some(c) = change {
                apply(&mut reg, c);
            }
            let _ = model;
            reg
        }

        fn check_invariants(reg: &Registry, model: &Model) {
            assert_eq!(reg.len(), model.nodes.len());
            for (id, (port, zone)) in &model.nodes {
                let got = reg.get(NodeId(*id)).expect("registered node present");
                assert_eq!(got.addr.port(), *port);
                assert_eq!(got.zone, Zone::new(format!("z{zone}")));
            }
            assert_eq!(reg.membership_version(), model.membership_changes);
        }
    }

    prop_state_machine! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn registry_matches_model(sequential 1..40 => RegistryModel);
    }
}
