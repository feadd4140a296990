//! Swarm mode: many seeds, each with its own fault mix, on all cores. Every
//! seed runs twice and must produce the same trace hash both times.

use crate::config::SimConfig;
use crate::engine::run;
use crate::oracle::{Violation, ViolationKind};
use crate::report::{percentile, Measurements, Report};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use stretchfs_core::{Duration, Time};

#[derive(Clone, Debug, Default)]
pub struct SwarmSummary {
    pub seeds: u64,
    /// Reports of the seeds that failed, in seed order.
    pub failures: Vec<Report>,
    pub measured: Measurements,
    pub convergence: Vec<Duration>,
    pub events: u64,
    pub sim_time: Duration,
    /// Wall time of the first run of each seed, summed over threads.
    pub run_wall: std::time::Duration,
    pub wall_time: std::time::Duration,
}

impl SwarmSummary {
    pub fn violations(&self) -> usize {
        self.failures.iter().map(|r| r.violations.len()).sum()
    }

    fn add(&mut self, r: Report) {
        self.seeds += 1;
        self.measured.merge(&r.measured);
        self.run_wall += r.wall_time;
        self.convergence.extend(r.convergence);
        self.events += r.events;
        self.sim_time += r.sim_time;
        if !r.passed() {
            self.failures.push(r);
        }
    }

    pub fn print(&self) {
        let mut all = self.measured.detections.clone();
        all.sort();
        let mut every = self.measured.detections_everywhere.clone();
        every.sort();
        let mut conv = self.convergence.clone();
        conv.sort();
        let ms =
            |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{}ms", d.as_millis()));
        println!("seeds run: {}", self.seeds);
        let run_wall = self.run_wall.as_secs_f64().max(1e-9);
        println!(
            "simulated {:.0}s; {:.1}s wall in all; one thread runs {:.0}x real time, {:.0} events/s",
            self.sim_time.as_secs_f64(),
            self.wall_time.as_secs_f64(),
            self.sim_time.as_secs_f64() / run_wall,
            self.events as f64 / run_wall
        );
        println!(
            "crash -> down at authority:       n={} p50={} p99={} max={}",
            all.len(),
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
            ms(all.last().copied())
        );
        println!(
            "crash -> down on every live node: n={} p50={} p99={} max={} ({} censored by later faults)",
            every.len(),
            ms(percentile(&every, 0.5)),
            ms(percentile(&every, 0.99)),
            ms(every.last().copied()),
            self.measured.detections_censored
        );
        let mut imp = self.measured.detections_impaired.clone();
        imp.sort();
        println!(
            "crash -> down while impaired (authority or observers down/partitioned; not judged): n={} p50={} max={}",
            imp.len(),
            ms(percentile(&imp, 0.5)),
            ms(imp.last().copied())
        );
        println!(
            "oracle checks: {} timely-detection, {} false-down, {} verdicts recounted, {} listed copies found on disk, {} nodes removed ({} refusals first; {} of their copies found elsewhere); false downs at >5% loss (tolerated): {}; authority starts from a snapshot: {}",
            self.measured.detection_checks,
            self.measured.false_down_checks,
            self.measured.verdict_audits,
            self.measured.listing_checks,
            self.measured.removals,
            self.measured.removals_refused,
            self.measured.removal_checks,
            self.measured.false_downs_tolerated,
            self.measured.snapshot_starts
        );
        let mut refusals = self.measured.refusal_windows.clone();
        refusals.sort();
        println!(
            "refusals after the final heal, per seed: p50={} p99={} max={}; by reason: {}",
            ms(percentile(&refusals, 0.5)),
            ms(percentile(&refusals, 0.99)),
            ms(refusals.last().copied()),
            self.measured
                .refusals_after_heal
                .iter()
                .map(|(why, (n, late))| format!("{why} x{n} (latest {})", ms(Some(*late))))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "convergence after final heal: p50={} p99={} max={}",
            ms(percentile(&conv, 0.5)),
            ms(percentile(&conv, 0.99)),
            ms(conv.last().copied())
        );
        println!("violations: {}", self.violations());
        for r in &self.failures {
            println!("\n{r}");
        }
    }
}

/// Runs seeds `first..first + count` on `jobs` threads. With `replay`, each
/// seed runs twice and a differing trace hash is a violation.
pub fn run_swarm(first: u64, count: u64, jobs: usize, replay: bool) -> SwarmSummary {
    run_swarm_with(first, count, jobs, replay, SimConfig::swarm)
}

pub fn run_swarm_with(
    first: u64,
    count: u64,
    jobs: usize,
    replay: bool,
    config: impl Fn(u64) -> SimConfig + Sync,
) -> SwarmSummary {
    let started = std::time::Instant::now();
    let next = AtomicU64::new(first);
    let results: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + count {
                    return;
                }
                let report = run_seed(&config, seed, replay);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(report);
            });
        }
    });
    let mut reports = results.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| r.seed);
    let mut summary = SwarmSummary::default();
    for r in reports {
        summary.add(r);
    }
    summary.wall_time = started.elapsed();
    summary
}

fn run_seed(config: &impl Fn(u64) -> SimConfig, seed: u64, replay: bool) -> Report {
    let mut report = run(config(seed), false);
    if replay {
        let again = run(config(seed), false);
        if again.trace_hash != report.trace_hash {
            report.violations.push(Violation {
                at: Time::ZERO,
                kind: ViolationKind::Nondeterminism,
                detail: format!(
                    "same seed, different trace hashes: {:016x} then {:016x}",
                    report.trace_hash, again.trace_hash
                ),
            });
        }
    }
    report
}
