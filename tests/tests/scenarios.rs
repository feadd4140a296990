//! Named simulator scenarios: each sets up one situation by hand and checks
//! what must happen, on top of the oracles every run is checked by.

use stretchfs_core::Duration;
use stretchfs_sim::{Fault, Sim};
use stretchfs_tests::{
    assert_passed, cut_observer_scenario, dead_observers_scenario, detection_bound, scenario, secs,
};

#[test]
fn store_crash_is_down_everywhere_within_two_seconds() {
    let mut cfg = scenario(1, 7, 2, 30.0);
    cfg.schedule(secs(10.0), Fault::Crash { host: 3 });
    let r = stretchfs_sim::run(cfg, false);
    assert_passed(&r);
    let down = r.verdicts_for(3, true);
    assert_eq!(down.len(), 1, "{r}");
    assert!(down[0] > secs(10.0) && down[0] <= secs(12.0), "{r}");
    assert_eq!(r.measured.detections_everywhere.len(), 1, "{r}");
    assert!(
        r.measured.detections_everywhere[0] <= Duration::from_secs(2),
        "{r}"
    );
    // It restarts at the heal and comes back by itself.
    assert!(
        r.verdicts_for(3, false).iter().any(|t| *t > secs(30.0)),
        "{r}"
    );
    // Nobody else was ever marked down.
    assert_eq!(r.verdicts.len(), 2, "{r}");
}

#[test]
fn authority_crash_and_restart_keeps_the_state_and_detection_resumes() {
    let mut cfg = scenario(2, 6, 2, 40.0);
    cfg.schedule(secs(10.0), Fault::Crash { host: 0 });
    cfg.schedule(
        secs(14.0),
        Fault::Restart {
            host: 0,
            new_addr: false,
        },
    );
    cfg.schedule(secs(25.0), Fault::Crash { host: 4 });
    let bound = detection_bound(&cfg);
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(9.9));
    let a = sim.world().authority().expect("authority up");
    let (log, head, nodes) = (a.log_id(), a.head(), a.state().registry.len());
    assert_eq!(nodes, 6);
    sim.run_until(secs(12.0));
    assert!(sim.world().authority().is_none());
    sim.run_until(secs(14.5));
    let a = sim.world().authority().expect("authority restarted");
    assert_eq!(a.log_id(), log, "same log after restart");
    assert!(a.head() >= head, "no entry lost");
    assert_eq!(a.state().registry.len(), nodes, "registry intact");
    let r = sim.run();
    assert_passed(&r);
    let down = r.verdicts_for(4, true);
    assert!(
        down.iter()
            .any(|t| *t > secs(25.0) && *t <= secs(25.0) + bound),
        "{r}"
    );
}

#[test]
fn ten_percent_loss_detects_crashes_without_false_downs() {
    let mut cfg = scenario(3, 8, 3, 40.0);
    cfg.net.drop = 0.10;
    cfg.schedule(secs(15.0), Fault::Crash { host: 5 });
    let bound = detection_bound(&cfg);
    let r = stretchfs_sim::run(cfg, false);
    assert_passed(&r);
    assert_eq!(r.measured.false_downs_tolerated, 0, "{r}");
    let downs: Vec<_> = r.verdicts.iter().filter(|(_, _, d)| *d).collect();
    assert_eq!(downs.len(), 1, "only the crashed node goes down: {r}");
    assert_eq!(downs[0].1, 5);
    assert!(downs[0].0 <= secs(15.0) + bound, "{r}");
}

#[test]
fn deaf_observer_cannot_take_healthy_nodes_down() {
    let mut cfg = scenario(4, 5, 1, 30.0);
    // Host 2 goes deaf: nothing reaches it, and it reaches nobody but the
    // authority. Every probe it makes fails, so it votes its subjects down,
    // and those votes do arrive.
    for other in [0, 1, 3, 4] {
        cfg.schedule(secs(5.0), Fault::OneWay { from: other, to: 2 });
    }
    for to in [1, 3, 4] {
        cfg.schedule(secs(5.0), Fault::OneWay { from: 2, to });
    }
    cfg.schedule(secs(25.0), Fault::HealNetwork);
    let r = stretchfs_sim::run(cfg, false);
    assert_passed(&r);
    for subject in [1, 3, 4] {
        assert!(
            r.votes
                .iter()
                .any(|&(_, voter, s, down)| voter == 2 && s == subject && down),
            "the broken observer voted {subject} down: {r}"
        );
        assert!(r.verdicts_for(subject, true).is_empty(), "{r}");
    }
}

#[test]
fn observer_cut_off_from_its_subject_cannot_take_it_down() {
    let (sim, cut, subject) = cut_observer_scenario(stretchfs_core::InjectedBugs::default());
    let r = sim.run();
    assert_passed(&r);
    assert!(
        r.votes
            .iter()
            .any(|&(_, voter, s, down)| voter == cut && s == subject && down),
        "the cut observer voted its subject down: {r}"
    );
    assert!(r.verdicts_for(subject, true).is_empty(), "{r}");
    assert!(
        r.verdicts_for(cut, true).is_empty(),
        "the authority still reaches it: {r}"
    );
}

#[test]
fn node_restarting_on_a_new_address_is_found_there() {
    let mut cfg = scenario(5, 5, 2, 30.0);
    cfg.schedule(secs(10.0), Fault::Crash { host: 4 });
    cfg.schedule(
        secs(14.0),
        Fault::Restart {
            host: 4,
            new_addr: true,
        },
    );
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(20.0));
    let w = sim.world();
    let node = w.hosts[4].node.as_ref().expect("running");
    let registered = w
        .authority()
        .and_then(|a| a.state().registry.get(node.id()).cloned())
        .expect("registered");
    assert_eq!(registered.addr.port(), 7001, "new address recorded");
    assert!(w.hosts.iter().all(|h| h.node.as_ref().is_some_and(|n| n
        .replica()
        .state()
        .registry
        .get(node.id())
        == Some(&registered))));
    let r = sim.run();
    assert_passed(&r);
    let down = r.verdicts_for(4, true);
    let up = r.verdicts_for(4, false);
    assert_eq!(down.len(), 1, "{r}");
    assert!(up.iter().any(|t| *t > secs(14.0) && *t < secs(18.0)), "{r}");
}

#[test]
fn pause_longer_than_the_bound_goes_down_then_comes_back() {
    let mut cfg = scenario(6, 5, 2, 30.0);
    let bound = detection_bound(&cfg);
    let resume = secs(10.0) + bound + Duration::from_secs(2);
    cfg.schedule(secs(10.0), Fault::Pause { host: 3 });
    cfg.schedule(resume, Fault::Resume { host: 3 });
    let r = stretchfs_sim::run(cfg, false);
    assert_passed(&r);
    let down = r.verdicts_for(3, true);
    assert_eq!(down.len(), 1, "{r}");
    assert!(down[0] <= secs(10.0) + bound, "{r}");
    let up = r.verdicts_for(3, false);
    assert!(
        up.iter()
            .any(|t| *t > resume && *t <= resume + Duration::from_secs(3)),
        "{r}"
    );
}

#[test]
fn short_pause_does_not_take_the_node_down() {
    let mut cfg = scenario(7, 5, 2, 30.0);
    cfg.schedule(secs(10.0), Fault::Pause { host: 2 });
    cfg.schedule(secs(10.3), Fault::Resume { host: 2 });
    let r = stretchfs_sim::run(cfg, false);
    assert_passed(&r);
    assert!(r.verdicts.is_empty(), "{r}");
}

#[test]
fn paused_observer_does_not_blame_its_subjects() {
    // The authority itself stalls for three seconds: its own probe rounds
    // expire while it sleeps and must not count as failures.
    let mut cfg = scenario(8, 5, 1, 30.0);
    cfg.schedule(secs(10.0), Fault::Pause { host: 0 });
    cfg.schedule(secs(13.0), Fault::Resume { host: 0 });
    let r = stretchfs_sim::run(cfg, false);
    assert_passed(&r);
    assert!(
        r.votes.iter().all(|&(_, voter, _, _)| voter != 0),
        "the stalled node voted: {r}"
    );
}

#[test]
fn a_crashed_node_whose_observers_all_die_is_never_published_up() {
    // Twelve nodes, K = 5: a store whose observers do not include the
    // authority. It crashes, is voted down, then every one of its observers
    // crashes too. Counting only live observers, nobody is left to vote it
    // down, and a tally that lets a node with no live majority of observers
    // come up publishes a dead node up. It must stay down until the heal.
    let (sim, subject) = dead_observers_scenario(stretchfs_core::InjectedBugs::default());
    let r = sim.run();
    assert!(
        r.verdicts_for(subject, true)
            .iter()
            .any(|t| *t < secs(13.0)),
        "voted down before its observers died: {r}"
    );
    let early_up: Vec<_> = r
        .verdicts_for(subject, false)
        .into_iter()
        .filter(|t| *t < secs(40.0))
        .collect();
    assert!(
        early_up.is_empty(),
        "published up while dead at {early_up:?}: {r}"
    );
    assert_passed(&r);
}

#[test]
fn a_node_whose_observers_restarted_after_voting_it_down_comes_back() {
    // Swarm seed 5018 (three nodes, three crashes): observers vote a node
    // down, then restart. The tally holds their expired down votes as
    // silence, not as "up"; a restarted observer that never spoke again left
    // the node down for good after it was back (NoConvergence). A new
    // incarnation now says at once that it votes nobody down.
    let r = stretchfs_sim::run(
        stretchfs_sim::SimConfig::swarm_without_operator(5018),
        false,
    );
    assert_passed(&r);
}

#[test]
fn a_leave_delayed_past_the_next_start_does_not_mark_the_node_left() {
    // Swarm seed 371 (three nodes): a store is told to stop while its links
    // are clogged, so its "leaving" is held for seconds; the authority is
    // wiped, the store starts again and rejoins, and only then does the old
    // leave arrive. It marked the running store left for good
    // (NoConvergence, FalseDown). A leave now names the start it is from.
    let r = stretchfs_sim::run(stretchfs_sim::SimConfig::swarm(371), false);
    assert_passed(&r);
}

#[test]
fn a_wiped_authority_with_most_of_a_small_cluster_down_waits_for_the_cluster_clock() {
    // Swarm seed 9658 (four nodes, the authority's clock 7 s off): the
    // authority is wiped while one node is partitioned and two leave or
    // crash. Its empty registry looked like a cluster of one, so it settled
    // on its own clock after 3 s and stated expiries 7 s early
    // (ExpiryWrong). A recovering authority now waits as a larger cluster.
    let r = stretchfs_sim::run(stretchfs_sim::SimConfig::swarm(9658), false);
    assert_passed(&r);
}

#[test]
fn a_lost_store_is_not_published_up_by_observers_the_restarted_authority_never_heard() {
    // Swarm seed 7351: a store is lost for good; the authority restarts
    // while a partition cuts it off from most of the store's observers.
    // Observers it had never heard from since its restart counted as
    // vouching, and the lost store was published up (FalseUp). An observer
    // now vouches only once its vote set has been held for a vote TTL.
    let r = stretchfs_sim::run(stretchfs_sim::SimConfig::swarm(7351), false);
    assert_passed(&r);
}

#[test]
fn a_wiped_authoritys_old_id_does_not_count_twice_in_the_cluster_clock() {
    // Swarm seed 5924 (four nodes, the authority's clock 6 s off): after
    // the authority is wiped it runs under a new id, and the prisms kept
    // counting its old, silent id as a live peer. The wrong clock counted
    // twice, moved the median 3.5 s, and a prism answered "expired" for a
    // purchase with 2.7 s left (FalseNotFound). A peer the registry does
    // not hold now counts only while it is heard.
    let r = stretchfs_sim::run(stretchfs_sim::SimConfig::swarm(5924), false);
    assert_passed(&r);
}

#[test]
fn a_node_back_while_most_of_its_observers_are_cut_off_may_stay_down() {
    // Swarm seed 8595 (ten nodes): a store leaves, stops and starts again
    // on the authority's side of a split; three of its five observers, on
    // the other side, last voted it down while it was stopped. Two vouching
    // observers of five are no majority, so the verdict stands until the
    // split heals. The oracle counted only the two the authority could hear
    // and called that a false down; it now weighs every running observer.
    let r = stretchfs_sim::run(stretchfs_sim::SimConfig::swarm(8595), false);
    assert_passed(&r);
}

#[test]
fn a_prism_restarted_while_the_authority_is_down_waits_for_the_cluster_clock() {
    // Swarm seed 7994 (four nodes, the prism's clock 8 s behind): the prism
    // restarts on a new address while the authority is down. Its replica
    // was still empty, which looked like a cluster of one or two, so after
    // 3 s it settled on its own clock; once the authority was back it
    // delivered a purchase that had expired 4 s before (InvalidDelivery).
    // A replica's registry is now taken for the cluster's size only once
    // it has synced.
    let r = stretchfs_sim::run(stretchfs_sim::SimConfig::swarm(7994), false);
    assert_passed(&r);
}

#[test]
fn a_dead_nodes_late_stamps_do_not_move_the_cluster_clock() {
    // Swarm seed 7416 (four nodes, one clock 3 s behind): a prism starts
    // while its links are clogged and is wiped before they clear; its join
    // and its stamps, 4 s late, then reach the wiped authority, which
    // registers the dead id. With the wild clock that made two low offsets
    // of four: the median moved 1.6 s and expiries were stated early
    // (ExpiryWrong). A peer now counts only once heard over half a second.
    let r = stretchfs_sim::run(stretchfs_sim::SimConfig::swarm(7416), false);
    assert_passed(&r);
}

#[test]
fn a_snapshot_slower_to_arrive_than_a_reader_waits_is_still_taken() {
    // A restart of `stretchfs dev` with 80k objects never came back and ran
    // out of memory: a snapshot took longer to build and send than a
    // reader waits for an answer (the pull's margin), so the reader asked
    // again, ignored the late answer as one to a request it had given up
    // on, and the authority built a whole new snapshot for every ask. Here
    // every message takes longer than that margin: the prisms must still
    // take their snapshots (now in pieces, each taken whenever it arrives,
    // from one encoding) and become ready.
    let mut cfg = scenario(4, 6, 2, 5.0);
    cfg.net.latency = stretchfs_transport_sim::LatencyModel {
        base: Duration::from_millis(5),
        mean_extra: Duration::ZERO,
        spike_chance: 0.0,
        spike: Duration::ZERO,
    };
    cfg.feed.rpc_margin = Duration::from_millis(2);
    let mut sim = Sim::new(cfg, false);
    assert!(sim.run_until(secs(20.0)), "the run ended early");
    let prisms: Vec<bool> = sim
        .world()
        .hosts
        .iter()
        .filter_map(|h| h.node.as_ref())
        .filter(|n| n.config().roles.prism)
        .map(|n| n.is_ready())
        .collect();
    assert!(!prisms.is_empty());
    assert!(prisms.iter().all(|r| *r), "prisms ready: {prisms:?}");
    assert_passed(&sim.run());
}
