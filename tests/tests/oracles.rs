//! Every oracle can fail: each test injects a bug the oracle exists to catch
//! and checks that it does.

use stretchfs_core::Duration;
use stretchfs_core::InjectedBugs;
use stretchfs_sim::swarm::run_swarm_with;
use stretchfs_sim::{Fault, ViolationKind};
use stretchfs_tests::{
    cut_observer_scenario, dead_observers_scenario, detection_bound, has_violation, scenario, secs,
};

#[test]
fn false_down_oracle_catches_a_single_vote_rule() {
    let bugs = InjectedBugs {
        single_vote_downs: true,
        ..InjectedBugs::default()
    };
    let (sim, _, _) = cut_observer_scenario(bugs);
    let r = sim.run();
    assert!(has_violation(&r, ViolationKind::FalseDown), "{r}");
}

#[test]
fn detection_oracle_catches_observers_that_never_vote() {
    let mut cfg = scenario(1, 7, 2, 30.0);
    cfg.bugs.never_vote_down = true;
    cfg.schedule(secs(10.0), Fault::Crash { host: 3 });
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::LateDetection), "{r}");
}

#[test]
fn liveness_oracle_catches_votes_that_are_never_withdrawn() {
    let mut cfg = scenario(6, 5, 2, 30.0);
    cfg.bugs.never_withdraw_votes = true;
    let resume = secs(10.0) + detection_bound(&cfg) + Duration::from_secs(2);
    cfg.schedule(secs(10.0), Fault::Pause { host: 3 });
    cfg.schedule(resume, Fault::Resume { host: 3 });
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::NoConvergence), "{r}");
    // The node is back and its observers reach it: keeping it down is
    // caught while the run goes on, not only at the end.
    assert!(
        r.violations
            .iter()
            .any(|v| v.kind == ViolationKind::FalseDown && v.detail.contains("kept down")),
        "{r}"
    );
}

#[test]
fn determinism_check_catches_a_nondeterministic_run() {
    let summary = run_swarm_with(11, 1, 1, true, |seed| {
        let mut cfg = stretchfs_sim::SimConfig::swarm(seed);
        cfg.inject_nondeterminism = true;
        cfg
    });
    assert_eq!(summary.failures.len(), 1);
    assert!(summary.failures[0]
        .violations
        .iter()
        .any(|v| v.kind == ViolationKind::Nondeterminism));
}

#[test]
fn livelock_guard_catches_a_node_that_never_lets_time_move() {
    let mut cfg = scenario(12, 3, 1, 20.0);
    cfg.bugs.wake_without_work = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::Livelock), "{r}");
}

/// Nodes on their own wall clocks instead of the cluster's: `skews` are
/// (host, µs off true time).
fn own_clocks(skews: &[(usize, i64)]) -> stretchfs_sim::Report {
    own_clocks_seed(31, skews)
}

fn own_clocks_seed(seed: u64, skews: &[(usize, i64)]) -> stretchfs_sim::Report {
    let mut cfg = scenario(seed, 7, 2, 40.0).with_clients();
    cfg.workload.interval = Duration::from_millis(20);
    cfg.workload.mix = [2, 6, 12, 1, 1, 1, 1];
    cfg.workload.stop = secs(38.0);
    for (host, skew) in skews {
        cfg.hosts[*host].clock.wall_skew_us = *skew;
    }
    cfg.bugs.own_wall_clock = true;
    stretchfs_sim::run(cfg, false)
}

#[test]
fn expiry_oracle_catches_an_authority_on_its_own_fast_clock() {
    let r = own_clocks(&[(0, 6_000_000)]);
    assert!(has_violation(&r, ViolationKind::ExpiryWrong), "{r}");
}

#[test]
fn not_found_oracle_catches_a_prism_on_its_own_fast_clock() {
    let r = own_clocks(&[(3, 6_000_000)]);
    assert!(has_violation(&r, ViolationKind::FalseNotFound), "{r}");
}

#[test]
fn delivery_oracle_catches_a_prism_on_its_own_slow_clock() {
    // Whether an expired purchase is asked for on the slow prism within its
    // 20 s depends on the draw: most seeds do.
    let caught = (31..35)
        .filter(|seed| {
            let r = own_clocks_seed(*seed, &[(3, -20_000_000)]);
            has_violation(&r, ViolationKind::InvalidDelivery)
        })
        .count();
    eprintln!("{caught} of 4 seeds caught it");
    assert!(caught >= 2, "{caught} of 4 seeds caught it");
}

#[test]
fn false_up_oracle_catches_ups_without_a_live_majority() {
    let bugs = InjectedBugs {
        up_without_live_majority: true,
        ..InjectedBugs::default()
    };
    let (sim, _) = dead_observers_scenario(bugs);
    let r = sim.run();
    assert!(has_violation(&r, ViolationKind::FalseUp), "{r}");
}

/// Seed 441 of the swarm isolates the authority for 8 s while a wiped
/// node's old id is down: every observer's down vote expires unrefreshed.
/// Counting that silence as "up" publishes the dead id up.
#[test]
fn false_up_oracle_catches_silence_taken_for_an_up() {
    let mut cfg = stretchfs_sim::SimConfig::swarm_without_operator(441);
    cfg.bugs.stale_votes_vouch = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::FalseUp), "{r}");
}

/// Swarm seeds (no replay) with `bugs`; how many found `kind`.
fn seeds_catching(count: u64, bugs: InjectedBugs, kind: ViolationKind) -> usize {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = run_swarm_with(0, count, jobs, false, |seed| {
        let mut cfg = stretchfs_sim::SimConfig::swarm(seed);
        cfg.bugs = bugs.clone();
        cfg
    });
    summary
        .failures
        .iter()
        .filter(|r| r.violations.iter().any(|v| v.kind == kind))
        .count()
}

#[test]
fn verdict_audit_catches_a_tie_taken_for_a_majority() {
    let bugs = InjectedBugs {
        tie_downs: true,
        ..InjectedBugs::default()
    };
    let caught = seeds_catching(100, bugs, ViolationKind::VerdictWithoutMajority);
    eprintln!("{caught} of 100 seeds caught it");
    assert!(caught > 0, "no seed of 100 caught it");
}

#[test]
fn verdict_audit_catches_a_single_vote_rule() {
    let bugs = InjectedBugs {
        single_vote_downs: true,
        ..InjectedBugs::default()
    };
    let caught = seeds_catching(100, bugs, ViolationKind::VerdictWithoutMajority);
    eprintln!("{caught} of 100 seeds caught it");
    assert!(caught > 0, "no seed of 100 caught it");
}

#[test]
fn fetch_oracle_catches_a_surplus_copy_dropped_before_it_is_unlisted() {
    let bugs = InjectedBugs {
        drop_before_unlist: true,
        ..InjectedBugs::default()
    };
    let caught = seeds_catching(300, bugs, ViolationKind::FetchMissed);
    eprintln!("{caught} of 300 seeds caught it");
    assert!(caught > 0, "no seed of 300 caught it");
}

#[test]
fn availability_oracle_catches_refused_reupload_claims_in_the_swarm() {
    let bugs = InjectedBugs {
        refuse_marked_claims: true,
        ..InjectedBugs::default()
    };
    let caught = seeds_catching(100, bugs, ViolationKind::Unavailable);
    eprintln!("{caught} of 100 seeds caught it");
    assert!(caught > 0, "no seed of 100 caught it");
}
