//! Shared helpers for the cross-crate tests: scenario builders and assertions
//! that print the replay command when a run fails.

use stretchfs_core::{Duration, Time};
use stretchfs_sim::{Report, SimConfig, ViolationKind};

pub fn secs(s: f64) -> Time {
    Time::ZERO + Duration::from_secs_f64(s)
}

/// A calm cluster (default settings, no faults) that heals at `heal_at`.
pub fn scenario(seed: u64, nodes: usize, zones: usize, heal_at: f64) -> SimConfig {
    let mut cfg = SimConfig::calm(seed, nodes, zones);
    cfg.heal_at = secs(heal_at);
    cfg
}

pub fn assert_passed(r: &Report) {
    assert!(r.passed(), "run failed:\n{r}");
}

pub fn has_violation(r: &Report, kind: ViolationKind) -> bool {
    r.violations.iter().any(|v| v.kind == kind)
}

/// The detection bound the oracles use for this configuration.
pub fn detection_bound(cfg: &SimConfig) -> Duration {
    cfg.template().detection_bound()
}

/// A cluster with an observer that is cut off from everyone but the
/// authority, yet stays up (the authority observes it and relays probes to
/// it), and a subject it observes that the authority does not observe. The
/// cut observer's probes of that subject all fail, so it keeps voting it down.
/// Returns the simulation at 5 s with the cut scheduled, the cut host and the
/// subject host.
pub fn cut_observer_scenario(
    bugs: stretchfs_core::InjectedBugs,
) -> (stretchfs_sim::Sim, usize, usize) {
    use stretchfs_sim::{Fault, Sim};
    for seed in 1..100 {
        let mut cfg = scenario(seed, 9, 1, 40.0);
        cfg.bugs = bugs.clone();
        let mut sim = Sim::new(cfg, false);
        sim.run_until(secs(5.0));
        let w = sim.world();
        let Some(a) = w.authority() else { continue };
        let st = a.state();
        let auth = w.hosts[0].node.as_ref().map(|n| n.id());
        let host_of = |id| w.host_of(id);
        let pick = st.registry.iter().find_map(|x| {
            let obs = st.observers_of(x.id);
            if Some(x.id) == auth || obs.iter().any(|o| Some(*o) == auth) {
                return None;
            }
            let d = obs
                .iter()
                .find(|d| st.observers_of(**d).iter().any(|o| Some(*o) == auth))?;
            Some((host_of(*d)?, host_of(x.id)?))
        });
        if let Some((cut, subject)) = pick {
            let others: Vec<usize> = (1..w.hosts.len()).filter(|h| *h != cut).collect();
            sim.schedule(
                secs(5.0),
                Fault::Split {
                    a: vec![cut],
                    b: others,
                },
            );
            return (sim, cut, subject);
        }
    }
    panic!("no seed below 100 gives the layout this scenario needs");
}

/// Twelve nodes, K = 5: a store whose observers do not include the
/// authority crashes at 10 s, is voted down, then every one of its observers
/// crashes too (13-14.2 s). Counting only live observers, nobody is left to
/// vote it down; it must stay down. Returns the simulation at 9 s with the
/// crashes scheduled, and the subject host.
pub fn dead_observers_scenario(bugs: stretchfs_core::InjectedBugs) -> (stretchfs_sim::Sim, usize) {
    use stretchfs_sim::{Fault, Sim};
    let mut cfg = scenario(31, 12, 3, 40.0);
    cfg.bugs = bugs;
    let mut sim = Sim::new(cfg, false);
    sim.run_until(secs(9.0));
    let w = sim.world();
    let state = w.authority().expect("authority").state().clone();
    let authority_id = w.hosts[0].node.as_ref().expect("authority node").id();
    let (subject, observers) = (1..w.hosts.len())
        .filter_map(|h| {
            let id = w.hosts[h].node.as_ref()?.id();
            let obs = state.observers_of(id).to_vec();
            (!obs.contains(&authority_id) && obs.len() == 5).then_some((h, obs))
        })
        .next()
        .expect("a subject the authority does not observe");
    let observer_hosts: Vec<usize> = observers.iter().filter_map(|o| w.host_of(*o)).collect();
    assert_eq!(observer_hosts.len(), 5);
    sim.schedule(secs(10.0), Fault::Crash { host: subject });
    for (i, h) in observer_hosts.iter().enumerate() {
        sim.schedule(secs(13.0 + i as f64 * 0.3), Fault::Crash { host: *h });
    }
    (sim, subject)
}
