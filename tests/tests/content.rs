//! Named content scenarios: each sets up one situation and checks what must
//! happen, on top of the content oracles every run is checked by (no false
//! not-found, no invalid delivery, no lost upload, R copies after repair,
//! inventory true to the disks, no lost purchase).

use stretchfs_core::{Duration, Time};
use stretchfs_sim::{Fault, Sim, SimConfig};
use stretchfs_tests::{assert_passed, scenario, secs};

fn with_storm(mut cfg: SimConfig) -> SimConfig {
    cfg = cfg.with_clients();
    cfg.workload.interval = Duration::from_millis(20);
    cfg.workload.mix = [2, 6, 12, 1, 1, 1, 1];
    cfg
}

/// Acknowledged uploads no client deleted (the workload deletes some).
fn undeleted_uploads(sim: &Sim) -> Vec<stretchfs_core::hash::ContentHash> {
    let clients = sim.clients();
    clients
        .uploads
        .iter()
        .map(|u| u.hash)
        .filter(|h| clients.must_exist(h))
        .collect()
}

/// Intact copies of `hash` on running hosts.
fn copies(sim: &Sim, hash: &stretchfs_core::hash::ContentHash) -> usize {
    sim.world()
        .hosts
        .iter()
        .filter(|h| h.node.is_some() && h.content.intact(hash))
        .count()
}

#[test]
fn prism_restarting_empty_during_a_purchase_storm_gives_no_false_not_found() {
    let mut cfg = with_storm(scenario(21, 7, 2, 40.0));
    // Host 3 is a prism: it loses its data directory and comes back empty.
    cfg.schedule(secs(15.0), Fault::WipeNode { host: 3 });
    cfg.schedule(
        secs(15.5),
        Fault::Restart {
            host: 3,
            new_addr: false,
        },
    );
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(14.9));
    let old_id = sim.world().hosts[3].node.as_ref().map(|n| n.id());
    sim.run_until(secs(15.4));
    let before = sim
        .clients()
        .stats
        .delivered_by
        .get(&3)
        .copied()
        .unwrap_or(0);
    sim.run_until(secs(16.0));
    let new = sim.world().hosts[3].node.as_ref().expect("restarted");
    assert_ne!(
        Some(new.id()),
        old_id,
        "came back as a new node with empty state"
    );
    let r = sim.run();
    // FalseNotFound would have failed the run.
    assert_passed(&r);
    let after = r.clients.delivered_by.get(&3).copied().unwrap_or(0);
    assert!(
        after > before + 50,
        "the restarted prism served: {before} -> {after}"
    );
    assert!(r.clients.purchases_acked > 100, "{r}");
}

#[test]
fn authority_wipe_then_recovery_loses_no_upload_or_purchase() {
    let mut cfg = with_storm(scenario(22, 8, 2, 40.0));
    cfg.schedule(secs(20.0), Fault::WipeAuthority);
    cfg.schedule(
        secs(22.0),
        Fault::Restart {
            host: 0,
            new_addr: false,
        },
    );
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(19.9));
    let log_before = sim.world().authority().map(|a| a.log_id());
    let uploads_before = sim.clients().uploads.len();
    let purchases_before = sim.clients().purchases.len();
    assert!(uploads_before > 50 && purchases_before > 50);
    sim.run_until(secs(22.5));
    let a = sim.world().authority().expect("restarted");
    assert_ne!(Some(a.log_id()), log_before, "a new, empty log");
    assert!(a.is_recovering());
    let r = sim.run();
    // The final checks judged every upload and purchase from before the
    // wipe: all still there (UploadLost, PurchaseLost, InventoryMismatch).
    assert_passed(&r);
    assert!(r.measured.upload_checks as usize >= uploads_before, "{r}");
    assert!(r.measured.purchase_checks > 0, "{r}");
}

#[test]
fn permanent_store_loss_is_repaired_to_r_copies_within_the_bound() {
    let mut cfg = scenario(23, 8, 2, 45.0).with_clients();
    cfg.workload.stop = secs(19.0);
    cfg.schedule(secs(20.0), Fault::LoseStore { host: 4 });
    let r_copies = cfg.content.replicas;
    // Detection, then the grace period, then scans and clones.
    let bound = cfg.template().detection_bound()
        + cfg.content.repair_grace
        + cfg.content.repair_interval * 3
        + cfg.content.clone_timeout;
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(19.99));
    let hashes = undeleted_uploads(&sim);
    let lost_here: Vec<_> = hashes
        .iter()
        .filter(|h| sim.world().hosts[4].content.intact(h))
        .copied()
        .collect();
    assert!(lost_here.len() > 10, "the lost store held content");
    let mut repaired_at = None;
    let mut t = secs(20.0);
    while t < secs(44.0) {
        t += Duration::from_millis(100);
        sim.run_until(t);
        if repaired_at.is_none() && hashes.iter().all(|h| copies(&sim, h) >= r_copies) {
            repaired_at = Some(t);
        }
    }
    let repaired_at = repaired_at.expect("repair restored R copies");
    assert!(
        repaired_at.since(secs(20.0)) <= bound,
        "repaired after {:?}, bound {bound:?}",
        repaired_at.since(secs(20.0))
    );
    let r = sim.run();
    assert_passed(&r);
}

#[test]
fn draining_a_store_never_drops_below_r_copies() {
    let mut cfg = scenario(24, 8, 2, 45.0).with_clients();
    cfg.workload.stop = secs(18.0);
    cfg.schedule(secs(20.0), Fault::Drain { host: 4 });
    let r_copies = cfg.content.replicas;
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(20.0));
    let hashes = undeleted_uploads(&sim);
    let on_drained = hashes
        .iter()
        .filter(|h| sim.world().hosts[4].content.intact(h))
        .count();
    assert!(on_drained > 10);
    let mut t = secs(20.0);
    while t < secs(44.0) {
        t += Duration::from_millis(20);
        sim.run_until(t);
        for h in &hashes {
            assert!(copies(&sim, h) >= r_copies, "{h} fell below R at {t}");
        }
    }
    let still = hashes
        .iter()
        .filter(|h| sim.world().hosts[4].content.intact(h))
        .count();
    assert_eq!(still, 0, "the drained store gave up every copy");
    let r = sim.run();
    assert_passed(&r);
}

#[test]
fn bit_rot_is_found_and_the_copy_replaced() {
    let mut cfg = scenario(25, 6, 2, 40.0).with_clients();
    cfg.workload.stop = secs(15.0);
    // Deliveries would also find rot; with none after the rot, only the
    // scrub can.
    for nth in 0..5 {
        cfg.schedule(
            secs(20.0),
            Fault::BitRot {
                host: 1,
                nth: nth * 7,
                at: nth,
            },
        );
    }
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(20.0) + Duration::from_micros(1));
    let rotten: Vec<_> = sim
        .clients()
        .uploads
        .iter()
        .map(|u| u.hash)
        .filter(|h| {
            let d = &sim.world().hosts[1].content;
            d.read(h).is_some() && !d.intact(h)
        })
        .collect();
    assert_eq!(rotten.len(), 5);
    sim.run_until(secs(35.0));
    // Content a client deleted meanwhile rightly goes.
    let kept: Vec<_> = rotten
        .iter()
        .filter(|h| sim.clients().must_exist(h))
        .collect();
    assert!(kept.len() >= 3, "{} of the rotten hashes kept", kept.len());
    for h in kept {
        assert!(copies(&sim, h) >= 2, "{h} was repaired");
    }
    let r = sim.run();
    assert_passed(&r);
}

#[test]
fn content_swarm_seeds_pass_every_oracle() {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = stretchfs_sim::swarm::run_swarm(5_000, 50, jobs, false);
    if summary.violations() > 0 {
        summary.print();
    }
    assert_eq!(summary.violations(), 0);
    assert!(summary.measured.delivery_checks > 1000);
    assert!(summary.measured.upload_checks > 1000);
    let _ = Time::ZERO;
}

#[test]
fn deleting_and_uploading_the_same_bytes_again_loses_no_acknowledged_upload() {
    // Deletes and re-uploads of the same hash, under crashes of stores and
    // of the authority: every re-upload acknowledged after its delete was
    // answered must keep its bytes (UploadLost, FalseNotFound, inventory).
    let mut cfg = with_storm(scenario(25, 7, 2, 40.0));
    cfg.workload.mix = [4, 4, 6, 1, 0, 4, 6];
    cfg.schedule(secs(12.0), Fault::Crash { host: 4 });
    cfg.schedule(
        secs(14.0),
        Fault::Restart {
            host: 4,
            new_addr: false,
        },
    );
    cfg.schedule(secs(20.0), Fault::Crash { host: 0 });
    cfg.schedule(
        secs(21.0),
        Fault::Restart {
            host: 0,
            new_addr: false,
        },
    );
    let r = Sim::new(cfg, false).run();
    assert_passed(&r);
    assert!(r.clients.deletes_acked > 20, "{r}");
    assert!(r.clients.reuploads_acked > 20, "{r}");
}

/// An authority 6 s fast and a prism 6 s slow (a broken NTP each): expiry
/// follows the life asked for by true time, since every node reads the
/// cluster's median clock. With each node on its own clock the oracles see
/// expiries stated 6 s late and purchases refused 6 s early
/// (`oracles.rs`, the `own_clocks` tests).
#[test]
fn purchases_expire_on_time_while_two_clocks_are_seconds_off() {
    let cfg = two_wild_clocks(scenario(31, 7, 2, 40.0));
    let r = stretchfs_sim::run(cfg, false);
    assert_passed(&r);
}

fn two_wild_clocks(cfg: SimConfig) -> SimConfig {
    let mut cfg = with_storm(cfg);
    cfg.workload.stop = secs(38.0);
    assert!(cfg.hosts[0].roles.authority && cfg.hosts[3].roles.prism);
    cfg.hosts[0].clock.wall_skew_us = 6_000_000;
    cfg.hosts[3].clock.wall_skew_us = -6_000_000;
    cfg
}

#[test]
fn an_authority_wiped_during_a_split_waits_for_the_stores_on_the_far_side() {
    // Swarm seed 3562: the authority lost its state while a split cut it
    // off from half the stores. The near side's replicas held those stores
    // down and handed back only the nodes they held up, so the recovering
    // authority never waited for the far side; once the split healed it
    // answered "not found" for content only the far side held, before
    // those stores were back (FalseNotFound). Hand-backs now name every
    // node but those that left.
    let mut cfg = with_storm(scenario(26, 8, 2, 40.0));
    cfg.workload.mix = [4, 8, 4, 1, 0, 0, 0];
    let (near, far) = (vec![0, 1, 2, 3], vec![4, 5, 6, 7]);
    cfg.schedule(secs(12.0), Fault::Split { a: near, b: far });
    cfg.schedule(secs(14.0), Fault::WipeAuthority);
    cfg.schedule(
        secs(15.0),
        Fault::Restart {
            host: 0,
            new_addr: false,
        },
    );
    cfg.schedule(secs(23.0), Fault::HealNetwork);
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(11.9));
    let far_only = undeleted_uploads(&sim)
        .into_iter()
        .filter(|h| (1..4).all(|host| !sim.world().hosts[host].content.intact(h)))
        .count();
    assert!(far_only > 5, "{far_only} hashes only on the far side");
    sim.run_until(secs(13.9));
    // The premise: the near side's replicas hold the far stores down.
    let w = sim.world();
    let replica = w.hosts[1].node.as_ref().expect("running").replica().state();
    let held_down = [4, 5, 7]
        .iter()
        .filter_map(|h| w.hosts[*h].node.as_ref().map(|n| n.id()))
        .filter(|id| replica.is_down(*id))
        .count();
    assert!(
        held_down >= 2,
        "{held_down} far stores held down at the wipe"
    );
    let r = sim.run();
    // The oracle judged every "not found" against the far side's disks.
    assert_passed(&r);
    assert!(r.clients.purchases_acked > 200, "{r}");
}

#[test]
fn a_store_is_removed_only_once_stopped_with_its_copies_elsewhere() {
    // An operator decommissions store host 4: asks to remove it while it
    // runs (refused: it is up), drains it, stops it, and asks again every
    // two seconds until the authority agrees. The oracles check that no
    // upload lost its last copies with its disks and that nothing of it
    // stays in the registry, the observer sets or the inventory.
    let mut cfg = with_storm(scenario(27, 8, 2, 45.0));
    assert!(cfg.hosts[4].roles.store);
    cfg.schedule(secs(8.0), Fault::Remove { host: 4 });
    cfg.schedule(secs(10.0), Fault::Drain { host: 4 });
    cfg.schedule(secs(20.0), Fault::Leave { host: 4 });
    cfg.schedule(secs(20.2), Fault::Crash { host: 4 });
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(9.9));
    let node = sim.world().hosts[4]
        .node
        .as_ref()
        .map(|n| n.id())
        .expect("up");
    let held = sim.world().hosts[4].content.listing().len();
    assert!(held > 5, "it held {held} copies");
    sim.run_until(secs(44.0));
    let state = sim.world().authority().expect("running").state();
    assert!(!state.registry.contains(node), "removed before the heal");
    assert!(state.observers.values().all(|o| !o.contains(&node)));
    let r = sim.run();
    assert_passed(&r);
    assert_eq!(r.measured.removals, 1, "{r}");
    assert!(r.measured.removals_refused >= 2, "{r}");
}
