//! Every content oracle can fail: each test injects the bug the oracle
//! exists to catch and checks that it does.

use stretchfs_core::Duration;
use stretchfs_sim::{Fault, SimConfig, ViolationKind};
use stretchfs_tests::{has_violation, scenario, secs};

fn storm(seed: u64, nodes: usize) -> SimConfig {
    let mut cfg = scenario(seed, nodes, 2, 40.0).with_clients();
    cfg.workload.interval = Duration::from_millis(20);
    cfg.workload.mix = [2, 6, 12, 1, 1, 1, 1];
    cfg
}

/// Prism 3 hears nothing from the authority for ten seconds: its replica
/// goes stale while purchases keep being created elsewhere.
fn stale_prism(cfg: &mut SimConfig) {
    cfg.schedule(secs(15.0), Fault::OneWay { from: 0, to: 3 });
    cfg.schedule(secs(25.0), Fault::HealNetwork);
}

#[test]
fn false_not_found_oracle_catches_a_prism_that_trusts_its_replica() {
    let mut cfg = storm(31, 7);
    stale_prism(&mut cfg);
    cfg.bugs.no_authority_fallback = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::FalseNotFound), "{r}");
}

#[test]
fn the_same_stale_prism_without_the_bug_never_says_not_found() {
    let mut cfg = storm(31, 7);
    stale_prism(&mut cfg);
    let r = stretchfs_sim::run(cfg, false);
    assert!(r.passed(), "{r}");
    assert!(r.clients.unavailable > 0, "it said 503 instead: {r}");
}

#[test]
fn invalid_delivery_oracle_catches_ignoring_expiry_and_removal() {
    let mut cfg = storm(32, 6);
    cfg.bugs.deliver_invalid_purchases = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::InvalidDelivery), "{r}");
}

#[test]
fn upload_loss_oracle_catches_acknowledging_one_copy() {
    let mut cfg = storm(33, 6);
    cfg.workload.mix = [10, 1, 1, 0, 0, 0, 0];
    // Neither prism (hosts 0 and 3) can reach store 2, so the second copy
    // of anything placed on 1 and 2 takes a failover; then store 1 is lost.
    cfg.schedule(secs(5.0), Fault::OneWay { from: 0, to: 2 });
    cfg.schedule(secs(5.0), Fault::OneWay { from: 3, to: 2 });
    cfg.schedule(secs(20.0), Fault::LoseStore { host: 1 });
    let mut good = cfg.clone();
    cfg.content.write_quorum = 2;
    cfg.bugs.ack_after_one_copy = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::UploadLost), "{r}");
    good.bugs = Default::default();
    let r = stretchfs_sim::run(good, false);
    assert!(!has_violation(&r, ViolationKind::UploadLost), "{r}");
}

#[test]
fn repair_oracle_catches_an_authority_that_never_repairs() {
    let mut cfg = scenario(34, 7, 2, 40.0).with_clients();
    cfg.bugs.no_repair = true;
    cfg.schedule(secs(20.0), Fault::LoseStore { host: 2 });
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::Underreplicated), "{r}");
}

#[test]
fn down_store_oracle_catches_delivering_from_any_holder() {
    let mut cfg = storm(35, 7);
    cfg.bugs.deliver_from_down_stores = true;
    cfg.schedule(secs(15.0), Fault::Crash { host: 2 });
    let r = stretchfs_sim::run(cfg, false);
    assert!(
        has_violation(&r, ViolationKind::DeliveredFromDownStore),
        "{r}"
    );
}

#[test]
fn replica_equality_oracle_catches_a_replica_that_skips_removals() {
    let mut cfg = storm(36, 6);
    cfg.bugs.replica_skips_removals = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::NoConvergence), "{r}");
    assert!(
        r.violations.iter().any(|v| v.detail.contains("purchases")),
        "{r}"
    );
}

#[test]
fn content_oracles_catch_dropping_copies_reported_for_deleted_content() {
    // Deletes and re-uploads of the same bytes: the stores report their new
    // copies before the placement reaches the authority, which still has the
    // hash as deleted. Dropping them at once loses acknowledged re-uploads.
    let mut caught = 0;
    for seed in 35..45 {
        let mut cfg = storm(seed, 7);
        cfg.workload.mix = [4, 4, 6, 1, 0, 4, 6];
        let good = cfg.clone();
        cfg.bugs.drop_reported_deleted = true;
        let r = stretchfs_sim::run(cfg, false);
        // The lost bytes show as soon as a purchase is delivered from a
        // store that dropped them, or at the end as a lost upload.
        caught += usize::from(
            has_violation(&r, ViolationKind::UploadLost)
                || has_violation(&r, ViolationKind::FetchMissed),
        );
        let r = stretchfs_sim::run(good, false);
        assert!(r.passed(), "{r}");
        assert!(r.clients.reuploads_acked > 20, "{r}");
    }
    eprintln!("{caught} of 10 seeds caught it");
    assert!(caught > 0, "no seed of 10 caught it");
}

#[test]
fn not_found_oracle_catches_a_revocation_retry_answered_not_found() {
    // A lossy network loses answers to revocations; the retry finds the
    // token revoked already and must say so, not "not found".
    let mut cfg = storm(36, 6);
    cfg.workload.mix = [2, 6, 4, 8, 0, 0, 0];
    cfg.net.drop = 0.05;
    let good = cfg.clone();
    cfg.bugs.revoke_retry_not_found = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::FalseNotFound), "{r}");
    let r = stretchfs_sim::run(good, false);
    assert!(!has_violation(&r, ViolationKind::FalseNotFound), "{r}");
}

#[test]
fn referrer_oracle_catches_a_prism_that_ignores_referrers() {
    let mut cfg = storm(37, 6);
    cfg.bugs.ignore_referrers = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::InvalidDelivery), "{r}");
}

#[test]
fn not_found_oracle_catches_a_recovering_authority_that_denies_what_it_has_not_heard_of() {
    // The authority loses its database while purchases follow uploads: until
    // the stores and prisms have handed back what they hold it must answer
    // "unavailable", not "not found".
    let mut cfg = storm(38, 7);
    cfg.schedule(secs(15.0), Fault::WipeAuthority);
    cfg.schedule(
        secs(16.0),
        Fault::Restart {
            host: 0,
            new_addr: false,
        },
    );
    // Two stores cannot hand back for a while: the recovery waits for them,
    // and what only they hold is unknown to the authority meanwhile.
    cfg.schedule(secs(15.5), Fault::OneWay { from: 1, to: 0 });
    cfg.schedule(secs(15.5), Fault::OneWay { from: 2, to: 0 });
    cfg.schedule(secs(22.0), Fault::HealNetwork);
    let good = cfg.clone();
    cfg.bugs.deny_while_recovering = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::FalseNotFound), "{r}");
    let r = stretchfs_sim::run(good, false);
    assert!(!has_violation(&r, ViolationKind::FalseNotFound), "{r}");
}

#[test]
fn overreplication_oracle_catches_a_repair_that_keeps_the_surplus() {
    // A drain copies everything off store 4 and must then drop its copies.
    let mut cfg = storm(39, 7);
    cfg.schedule(secs(20.0), Fault::Drain { host: 4 });
    let good = cfg.clone();
    cfg.bugs.keep_surplus = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::Overreplicated), "{r}");
    let r = stretchfs_sim::run(good, false);
    assert!(!has_violation(&r, ViolationKind::Overreplicated), "{r}");
}

#[test]
fn availability_oracle_catches_refusing_a_reupload_a_store_has_not_reported_yet() {
    // Deletes and re-uploads of the same bytes, and clients that go on well
    // after the heal: a store that dropped the bytes before holds a mark
    // until it reports the new copy, and refusing the placement meanwhile
    // tells the client "retry" for bytes that are stored.
    let mut cfg = storm(40, 6);
    cfg.workload.mix = [4, 4, 6, 1, 0, 4, 6];
    cfg.workload.stop = cfg.heal_at + Duration::from_secs(20);
    let good = cfg.clone();
    cfg.bugs.refuse_marked_claims = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::Unavailable), "{r}");
    let r = stretchfs_sim::run(good, false);
    assert!(r.passed(), "{r}");
    assert!(r.clients.reuploads_acked > 20, "{r}");
}

#[test]
fn inventory_oracle_catches_an_authority_that_keeps_listing_rotten_copies() {
    // Scrub finds rotten copies and the stores report them removed; an
    // authority that ignores the removals lists copies that are not there.
    let mut cfg = storm(41, 6);
    for (i, t) in [20.0, 22.0, 24.0, 26.0].iter().enumerate() {
        cfg.schedule(
            secs(*t),
            Fault::BitRot {
                host: 1 + i % 2,
                nth: i * 3,
                at: 7,
            },
        );
    }
    let good = cfg.clone();
    cfg.bugs.ignore_reported_removals = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(
        r.violations
            .iter()
            .any(|v| v.kind == ViolationKind::InventoryMismatch
                && v.detail.contains("no intact copy")),
        "{r}"
    );
    let r = stretchfs_sim::run(good, false);
    assert!(r.passed(), "{r}");
}

/// Store host 4 stops without a drain and is removed at once: its copies
/// are among the last R until repair has made new ones.
fn removed_undrained(cfg: &mut SimConfig) {
    cfg.schedule(secs(20.0), Fault::Leave { host: 4 });
    cfg.schedule(secs(20.2), Fault::Crash { host: 4 });
    cfg.schedule(secs(20.5), Fault::Remove { host: 4 });
}

#[test]
fn removal_oracle_catches_removing_a_store_that_holds_the_last_copies() {
    let mut cfg = storm(38, 8);
    removed_undrained(&mut cfg);
    cfg.bugs.remove_last_copies = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::Underreplicated), "{r}");
}

#[test]
fn removed_node_oracle_catches_a_removal_acknowledged_but_not_recorded() {
    let mut cfg = storm(38, 8);
    removed_undrained(&mut cfg);
    cfg.bugs.removal_not_recorded = true;
    let r = stretchfs_sim::run(cfg, false);
    assert!(has_violation(&r, ViolationKind::RemovedNodeKept), "{r}");
}

#[test]
fn the_same_removal_without_the_bug_waits_for_repair() {
    let mut cfg = storm(38, 8);
    removed_undrained(&mut cfg);
    let r = stretchfs_sim::run(cfg, false);
    assert!(r.passed(), "{r}");
    assert_eq!(r.measured.removals, 1, "{r}");
    assert!(r.measured.removals_refused > 0, "{r}");
}
