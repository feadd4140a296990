//! Swarm seeds and determinism: every seed draws its own fault mix; each runs
//! twice and must give the same trace hash.

use stretchfs_sim::swarm::run_swarm;
use stretchfs_sim::SimConfig;

#[test]
fn two_hundred_swarm_seeds_pass_every_oracle() {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = run_swarm(0, 200, jobs, true);
    if summary.violations() > 0 {
        summary.print();
    }
    assert_eq!(summary.seeds, 200);
    assert_eq!(summary.violations(), 0, "replay the seeds printed above");
    // The oracles did real work.
    assert!(
        summary.measured.detection_checks > 50,
        "{}",
        summary.measured.detection_checks
    );
    assert!(!summary.measured.detections_everywhere.is_empty());
}

#[test]
fn same_seed_same_trace_hash_different_seed_different_hash() {
    let a = stretchfs_sim::run(SimConfig::swarm(42), false);
    let b = stretchfs_sim::run(SimConfig::swarm(42), false);
    let c = stretchfs_sim::run(SimConfig::swarm(43), false);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert_ne!(a.trace_hash, c.trace_hash);
}
