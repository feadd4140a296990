//! What one run found, and percentiles over many.

use crate::oracle::Violation;
use std::fmt;
use stretchfs_core::{Duration, Time};
use stretchfs_transport_sim::HostId;

/// What the oracles measured (as opposed to what they judged).
#[derive(Clone, Debug, Default)]
pub struct Measurements {
    /// Crash to the authority's down verdict, crashes the cluster could detect.
    pub detections: Vec<Duration>,
    /// Crash to the verdict applied on every live node, crashes every node
    /// could hear of.
    pub detections_everywhere: Vec<Duration>,
    /// Detections of crashes the cluster was too impaired to detect in time.
    pub detections_impaired: Vec<Duration>,
    /// Crashes whose timing a later fault cut short.
    pub detections_censored: u64,
    pub detection_checks: u64,
    pub false_down_checks: u64,
    /// Down verdicts recounted from the votes the authority received.
    pub verdict_audits: u64,
    /// False downs at more than 5% loss: counted, not failed.
    pub false_downs_tolerated: u64,
    /// Not-found answers judged against the ground truth.
    pub not_found_checks: u64,
    /// Deliveries judged for validity.
    pub delivery_checks: u64,
    pub upload_checks: u64,
    pub purchase_checks: u64,
    /// Copies the final inventory lists, checked on the stores' disks.
    pub listing_checks: u64,
    /// Nodes removed (each checked for the content it took with it).
    pub removals: u64,
    /// Removals the authority refused (the node up, or holding the last
    /// copies of something).
    pub removals_refused: u64,
    /// Copies on removed nodes checked for another intact copy.
    pub removal_checks: u64,
    /// Authority starts that rebuilt the state from a compacted snapshot.
    pub snapshot_starts: u64,
    /// Per seed: from the final heal to the last refusal the ground truth
    /// did not call for.
    pub refusal_windows: Vec<Duration>,
    /// Refusals after the final heal, by reason: how many, and the latest
    /// (time since the heal).
    pub refusals_after_heal: std::collections::BTreeMap<&'static str, (u64, Duration)>,
}

impl Measurements {
    pub fn merge(&mut self, other: &Measurements) {
        self.detections.extend(&other.detections);
        self.detections_everywhere
            .extend(&other.detections_everywhere);
        self.detections_impaired.extend(&other.detections_impaired);
        self.detections_censored += other.detections_censored;
        self.detection_checks += other.detection_checks;
        self.false_down_checks += other.false_down_checks;
        self.verdict_audits += other.verdict_audits;
        self.false_downs_tolerated += other.false_downs_tolerated;
        self.not_found_checks += other.not_found_checks;
        self.delivery_checks += other.delivery_checks;
        self.upload_checks += other.upload_checks;
        self.purchase_checks += other.purchase_checks;
        self.listing_checks += other.listing_checks;
        self.removals += other.removals;
        self.removals_refused += other.removals_refused;
        self.removal_checks += other.removal_checks;
        self.snapshot_starts += other.snapshot_starts;
        self.refusal_windows.extend(&other.refusal_windows);
        for (why, (n, late)) in &other.refusals_after_heal {
            let e = self.refusals_after_heal.entry(why).or_default();
            e.0 += n;
            e.1 = e.1.max(*late);
        }
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub description: String,
    pub trace_hash: u64,
    pub events: u64,
    pub sim_time: Duration,
    pub wall_time: std::time::Duration,
    pub loss: f64,
    pub measured: Measurements,
    pub convergence: Option<Duration>,
    pub violations: Vec<Violation>,
    pub messages: u64,
    pub probe_messages: u64,
    pub dropped_foreign: u64,
    /// Every verdict the authority published: (time, host, down).
    pub verdicts: Vec<(Time, HostId, bool)>,
    /// Every vote change: (time, voter host, subject host, down).
    pub votes: Vec<(Time, HostId, HostId, bool)>,
    pub clients: crate::clients::ClientStats,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Times at which the authority published `host` as down (`down`) or up.
    pub fn verdicts_for(&self, host: HostId, down: bool) -> Vec<Time> {
        self.verdicts
            .iter()
            .filter(|(_, h, d)| *h == host && *d == down)
            .map(|(t, _, _)| *t)
            .collect()
    }

    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p stretchfs-sim -- run --seed {}",
            self.seed
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}: {}", self.seed, self.description)?;
        writeln!(
            f,
            "  simulated {:.1}s in {:.3}s wall ({:.0}x), {} events, {} messages ({} probe)",
            self.sim_time.as_secs_f64(),
            self.wall_time.as_secs_f64(),
            self.sim_time.as_secs_f64() / self.wall_time.as_secs_f64().max(1e-9),
            self.events,
            self.messages,
            self.probe_messages
        )?;
        writeln!(
            f,
            "  detection (crash -> down at authority): {}",
            list_ms(&self.measured.detections)
        )?;
        writeln!(
            f,
            "  detection (crash -> down on every live node): {} ({} censored by a later fault)",
            list_ms(&self.measured.detections_everywhere),
            self.measured.detections_censored
        )?;
        writeln!(
            f,
            "  detection while the cluster was impaired (not judged): {}",
            list_ms(&self.measured.detections_impaired)
        )?;
        writeln!(
            f,
            "  checks: {} false-down, {} timely-detection, {} verdicts recounted; false downs tolerated at >5% loss: {}",
            self.measured.false_down_checks,
            self.measured.detection_checks,
            self.measured.verdict_audits,
            self.measured.false_downs_tolerated
        )?;
        let c = &self.clients;
        if c.issued > 0 {
            writeln!(
                f,
                "  clients: {} requests; {} uploads, {} purchases, {} removals acknowledged; {} deliveries ({} fetched ok, {} fetch failures); {} not ready, {} unavailable, {} not found, {} expired",
                c.issued,
                c.uploads_acked,
                c.purchases_acked,
                c.removals_acked,
                c.deliveries_ok,
                c.fetches_ok,
                c.fetches_failed,
                c.not_ready,
                c.unavailable,
                c.not_found,
                c.expired
            )?;
        }
        match self.convergence {
            Some(c) => writeln!(
                f,
                "  converged {:.2}s after the final heal",
                c.as_secs_f64()
            )?,
            None => writeln!(f, "  did not converge after the final heal")?,
        }
        writeln!(f, "  trace hash {:016x}", self.trace_hash)?;
        if self.violations.is_empty() {
            write!(f, "  OK: no violations")
        } else {
            writeln!(f, "  {} VIOLATIONS:", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "    {v}")?;
            }
            write!(f, "  replay: {}", self.replay_command())
        }
    }
}

fn list_ms(d: &[Duration]) -> String {
    if d.is_empty() {
        return "none".into();
    }
    d.iter()
        .map(|x| format!("{}ms", x.as_millis()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value below which `p` (0..=1) of the sorted samples fall
/// (nearest-rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
