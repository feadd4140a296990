//! Who observes whom. Each subject gets K observers chosen by rendezvous
//! hashing and spread over zones, so every node observes about K subjects no
//! matter how large the cluster is. The authority computes the assignment and
//! publishes it through the feed, so observers and the tally always agree.

use crate::ids::{NodeId, Zone};
use crate::rng::mix64;
use std::collections::BTreeMap;

/// Rendezvous score of `candidate` for `subject`; highest wins.
pub fn rendezvous_score(subject: NodeId, candidate: NodeId) -> u64 {
    mix64(subject.0 ^ mix64(candidate.0))
}

/// The observers of every member, sorted by node id per subject.
pub fn assign_observers(members: &[(NodeId, &Zone)], k: usize) -> BTreeMap<NodeId, Vec<NodeId>> {
    assign_observers_among(members, |_| true, k)
}

/// The observers of every member, chosen among the members `may_observe`
/// accepts (nodes published down observe nobody: a subject whose observers
/// died would otherwise have no live majority to decide on it).
pub fn assign_observers_among(
    members: &[(NodeId, &Zone)],
    may_observe: impl Fn(NodeId) -> bool,
    k: usize,
) -> BTreeMap<NodeId, Vec<NodeId>> {
    // Zones become small integers once, not per comparison.
    let mut zone_index: BTreeMap<&Zone, usize> = BTreeMap::new();
    let subjects: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
    let observers: Vec<(NodeId, usize)> = members
        .iter()
        .filter(|(id, _)| may_observe(*id))
        .map(|(id, zone)| {
            let next = zone_index.len();
            (*id, *zone_index.entry(zone).or_insert(next))
        })
        .collect();
    let zones = zone_index.len();
    let mut per_zone: Vec<Vec<(u64, NodeId)>> = vec![Vec::new(); zones];
    subjects
        .into_iter()
        .map(|subject| {
            (
                subject,
                observers_of(subject, &observers, zones, k, &mut per_zone),
            )
        })
        .collect()
}

fn observers_of(
    subject: NodeId,
    members: &[(NodeId, usize)],
    zones: usize,
    k: usize,
    per_zone: &mut [Vec<(u64, NodeId)>],
) -> Vec<NodeId> {
    let others = members.iter().filter(|m| m.0 != subject).count();
    if others <= k {
        let mut all: Vec<NodeId> = members
            .iter()
            .map(|m| m.0)
            .filter(|id| *id != subject)
            .collect();
        all.sort_unstable();
        return all;
    }
    for bucket in per_zone.iter_mut() {
        bucket.clear();
    }
    for &(id, zone) in members {
        if id != subject {
            per_zone[zone].push((rendezvous_score(subject, id), id));
        }
    }
    // Best K of each zone, best first.
    for bucket in per_zone.iter_mut() {
        if bucket.len() > k {
            bucket.select_nth_unstable_by(k, |a, b| b.cmp(a));
            bucket.truncate(k);
        }
        bucket.sort_unstable_by(|a, b| b.cmp(a));
    }
    // Round-robin over zones (zones ordered by their best score) spreads the
    // observers as evenly over failure domains as the membership allows.
    let mut order: Vec<usize> = (0..zones).filter(|z| !per_zone[*z].is_empty()).collect();
    order.sort_unstable_by(|a, b| per_zone[*b][0].cmp(&per_zone[*a][0]));
    let mut chosen = Vec::with_capacity(k);
    let mut depth = 0;
    while chosen.len() < k {
        let mut took = false;
        for &z in &order {
            if let Some(&(_, id)) = per_zone[z].get(depth) {
                if chosen.len() < k {
                    chosen.push(id);
                    took = true;
                }
            }
        }
        if !took {
            break;
        }
        depth += 1;
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(n: u64, zones: u64) -> Vec<(NodeId, Zone)> {
        (0..n)
            .map(|i| (NodeId(mix64(i)), Zone::new(format!("z{}", i % zones))))
            .collect()
    }

    fn assign(m: &[(NodeId, Zone)], k: usize) -> BTreeMap<NodeId, Vec<NodeId>> {
        let refs: Vec<(NodeId, &Zone)> = m.iter().map(|(id, z)| (*id, z)).collect();
        assign_observers(&refs, k)
    }

    #[test]
    fn small_cluster_observes_all_peers() {
        let m = members(6, 2);
        let map = assign(&m, 5);
        for (subject, obs) in &map {
            assert_eq!(obs.len(), 5);
            assert!(!obs.contains(subject));
        }
    }

    #[test]
    fn large_cluster_spreads_over_zones() {
        let m = members(60, 3);
        let zone_of: BTreeMap<NodeId, Zone> = m.iter().cloned().collect();
        for (_, obs) in assign(&m, 6) {
            let mut per_zone: BTreeMap<&Zone, usize> = BTreeMap::new();
            for o in &obs {
                *per_zone.entry(&zone_of[o]).or_default() += 1;
            }
            assert_eq!(per_zone.len(), 3);
            assert!(per_zone.values().all(|c| *c == 2), "{per_zone:?}");
        }
    }

    #[test]
    fn observer_load_is_flat_in_cluster_size() {
        for n in [20u64, 200, 1000] {
            let m = members(n, 3);
            let map = assign(&m, 5);
            let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
            for obs in map.values() {
                for o in obs {
                    *load.entry(*o).or_default() += 1;
                }
            }
            let max = load.values().max().copied().unwrap_or(0);
            let mean = load.values().sum::<usize>() as f64 / n as f64;
            assert!((mean - 5.0).abs() < 1e-9, "n={n} mean={mean}");
            assert!(max <= 16, "n={n} max load {max}");
        }
    }

    #[test]
    fn down_nodes_observe_nobody() {
        let m = members(8, 2);
        let refs: Vec<(NodeId, &Zone)> = m.iter().map(|(id, z)| (*id, z)).collect();
        let dead = [m[0].0, m[1].0, m[2].0];
        let map = assign_observers_among(&refs, |id| !dead.contains(&id), 5);
        assert_eq!(map.len(), 8, "every member is still observed");
        for (subject, obs) in &map {
            assert!(obs.iter().all(|o| !dead.contains(o)), "{subject}: {obs:?}");
            assert_eq!(obs.len(), 5 - usize::from(!dead.contains(subject)));
        }
    }

    proptest! {
        #[test]
        fn k_distinct_observers_never_the_subject(n in 2u64..40, zones in 1u64..4, k in 1usize..8) {
            let m = members(n, zones);
            let map = assign(&m, k);
            prop_assert_eq!(map.len() as u64, n);
            for (subject, obs) in &map {
                prop_assert_eq!(obs.len(), k.min(n as usize - 1));
                prop_assert!(!obs.contains(subject));
                let mut dedup = obs.clone();
                dedup.dedup();
                prop_assert_eq!(&dedup, obs);
            }
        }

        #[test]
        fn adding_a_node_moves_few_assignments(n in 12u64..60, k in 2usize..6) {
            let m = members(n, 1);
            let before = assign(&m, k);
            let mut grown = m.clone();
            grown.push((NodeId(mix64(10_000)), Zone::new("z0")));
            let after = assign(&grown, k);
            let changed = before.iter().filter(|(s, obs)| after[*s] != **obs).count();
            // Rendezvous: the newcomer enters about k of n subjects' sets.
            prop_assert!(changed <= 3 * k + 3, "changed {} of {}", changed, n);
        }
    }
}
