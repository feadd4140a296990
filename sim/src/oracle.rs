//! Safety and liveness checks, run while the simulation runs.
//!
//! - no false down: a node that is running, not paused, and reachable over
//!   clean links by a majority of its counted observers (running, stable,
//!   connected to the authority) is never marked down, once it and they have
//!   been stable for longer than a vote can outlive its cause; nor kept
//!   down once the observers that reach it are a majority of all its running
//!   observers (a verdict stands until a majority can vouch);
//! - timely detection: a crashed node is marked down within the configured
//!   bound whenever the authority and a majority of its observers are up,
//!   stable and connected;
//! - liveness: after the final heal every node agrees with the authority
//!   within the liveness bound, with nobody down or suspected.

use crate::config::SimConfig;
use crate::report::Measurements;
use crate::world::World;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use stretchfs_core::{Duration, NodeId, Notice, Time};
use stretchfs_transport_sim::HostId;

/// Above this loss rate, false downs are counted, not failures.
pub const LOSSY: f64 = 0.05;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    FalseDown,
    LateDetection,
    NoConvergence,
    Nondeterminism,
    /// A ready prism said "not found" (or "expired") for a valid purchase.
    FalseNotFound,
    /// An expired, removed or made-up purchase was delivered.
    InvalidDelivery,
    /// An acknowledged upload has no intact copy left.
    UploadLost,
    /// A removed node's registration, observer duty or listed copy outlived
    /// its removal.
    RemovedNodeKept,
    /// Content has fewer than R intact copies after the liveness phase.
    Underreplicated,
    /// A node was published down without a strict majority of its live
    /// assigned observers' unexpired down votes, as received.
    VerdictWithoutMajority,
    /// Content has more than R intact copies after the liveness phase (a
    /// drain or a repair that never dropped the surplus).
    Overreplicated,
    /// Content has R copies in fewer zones than R (or than the zones with
    /// running stores) after the liveness phase.
    ZonesNotDistinct,
    /// Delivery went to a down store while a live copy existed.
    DeliveredFromDownStore,
    /// A prism sent a client to a running store that has no copy of content
    /// no client deleted.
    FetchMissed,
    /// A client received bytes that are not the content it asked for.
    WrongBytes,
    /// The authority's inventory does not list an intact copy.
    InventoryMismatch,
    /// An acknowledged, valid purchase is missing at the authority.
    PurchaseLost,
    /// A node published up while it had been crashed or paused for longer
    /// than a vote takes to expire and a detection to happen: nobody could
    /// have seen it alive.
    FalseUp,
    /// The expiry stated for a purchase is not the life asked for, by true
    /// time.
    ExpiryWrong,
    /// A prism answered "not ready" or "unavailable" past the bound after
    /// the final heal, with the ground truth calling for no refusal.
    Unavailable,
    /// Simulated time stopped moving: something reschedules itself at the
    /// same instant forever.
    Livelock,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at: Time,
    pub kind: ViolationKind,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {:?}: {}", self.at, self.kind, self.detail)
    }
}

/// One crash being timed until every live node applied its down verdict.
#[derive(Clone, Debug)]
struct CrashWatch {
    node: NodeId,
    at: Time,
    published: Option<Time>,
    pending: BTreeSet<HostId>,
    /// When every live node had applied the verdict.
    everywhere: Option<Time>,
    /// Set by the detection check: could the cluster detect this crash in
    /// time (authority and a majority of observers up, settled, connected),
    /// and could every live node hear of it (all connected to the authority)?
    eligible: Option<(bool, bool)>,
}

#[derive(Debug)]
pub struct Oracle {
    /// How long a node (and its observers) must have been stable before a
    /// down verdict on it counts as false: a vote can outlive its cause by
    /// the vote TTL after its observer loses the authority, plus a detection.
    pub stable_window: Duration,
    pub detection_bound: Duration,
    /// Observers that restarted this recently are not expected to probe yet.
    pub settle: Duration,
    /// A restarted authority lets nobody up for this long.
    pub startup_grace: Duration,
    /// Nodes already reported as kept down (reported once each).
    kept_down: BTreeSet<NodeId>,
    pub violations: Vec<Violation>,
    pub measured: Measurements,
    crashes: BTreeMap<HostId, CrashWatch>,
    /// When each node id last died (ground truth for false ups: a wiped
    /// host's old id stays dead when the host runs on under a new one).
    died: BTreeMap<NodeId, Time>,
    pub heal_at: Time,
    /// Every verdict the authority published: (time, host, down).
    pub verdicts: Vec<(Time, HostId, bool)>,
    /// Every vote change: (time, voter host, subject host, down).
    pub votes: Vec<(Time, HostId, HostId, bool)>,
    pub converged_at: Option<Time>,
    pub divergence: Option<String>,
    /// How long after a removal is acknowledged a connected prism may still
    /// deliver the purchase (the feed's propagation bound plus slack).
    pub removal_bound: Duration,
    /// Slack around purchase expiry: wall clocks differ by up to twice the
    /// largest skew.
    pub expiry_slack: Duration,
    /// A durable copy the inventory has had this long to learn about.
    pub report_bound: Duration,
    pub replicas: usize,
    pub write_quorum: usize,
    /// Node ids abandoned when a host lost its data directory.
    pub retired: BTreeSet<NodeId>,
    /// When the authority lost its state.
    pub wipes: Vec<Time>,
    /// Copies destroyed by faults (a lost store's files, rotted files), per
    /// content: losing W of them can lose an upload without any bug.
    pub destroyed: BTreeMap<stretchfs_core::hash::ContentHash, usize>,
    /// Recounts every published down from the votes received.
    pub audit: crate::verdict_audit::VerdictAudit,
    /// How long after the final heal a prism may still refuse.
    pub availability_bound: Duration,
    /// The latest refusal judged, from when the prisms should serve.
    pub latest_refusal: Duration,
    /// Stores an admin asked to drain (and not to stop draining).
    pub drained: BTreeSet<HostId>,
    /// When the authority's host last started.
    pub authority_started: Option<Time>,
    pub recovery_window: Duration,
    /// Nodes the authority agreed to remove, and when.
    pub removed: BTreeMap<NodeId, Time>,
}

const MAX_VIOLATIONS: usize = 20;

impl Oracle {
    pub fn new(cfg: &SimConfig) -> Oracle {
        let t = cfg.template();
        Oracle {
            stable_window: cfg.tally.vote_ttl + t.detection_bound(),
            detection_bound: t.detection_bound(),
            settle: Duration::from_secs(3),
            startup_grace: cfg.tally.startup_grace,
            kept_down: BTreeSet::new(),
            violations: Vec::new(),
            measured: Measurements::default(),
            crashes: BTreeMap::new(),
            died: BTreeMap::new(),
            heal_at: cfg.heal_at,
            verdicts: Vec::new(),
            votes: Vec::new(),
            converged_at: None,
            divergence: None,
            removal_bound: t.propagation_bound() + cfg.content.rpc_timeout + Duration::from_secs(1),
            expiry_slack: cfg.max_wall_skew * 2 + Duration::from_millis(100),
            report_bound: Duration::from_secs(10),
            replicas: cfg.content.replicas,
            write_quorum: cfg.content.write_quorum,
            retired: BTreeSet::new(),
            wipes: Vec::new(),
            destroyed: BTreeMap::new(),
            audit: crate::verdict_audit::VerdictAudit::new(cfg.tally.vote_ttl),
            availability_bound: t.detection_bound() + t.propagation_bound(),
            latest_refusal: Duration::ZERO,
            drained: BTreeSet::new(),
            authority_started: None,
            recovery_window: cfg.content.recovery_window,
            removed: BTreeMap::new(),
        }
    }

    pub fn violate(&mut self, at: Time, kind: ViolationKind, detail: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation { at, kind, detail });
        }
    }

    /// A host crashed; returns when to check that it was detected.
    pub fn on_crash(&mut self, w: &World, host: HostId, node: NodeId) -> Time {
        self.died.insert(node, w.now);
        if let Some(old) = self.crashes.remove(&host) {
            self.censor(old);
        }
        for watch in self.crashes.values_mut() {
            watch.pending.remove(&host);
        }
        self.complete_watches(w.now);
        if host != 0 {
            self.crashes.insert(
                host,
                CrashWatch {
                    node,
                    at: w.now,
                    published: None,
                    pending: BTreeSet::new(),
                    everywhere: None,
                    eligible: None,
                },
            );
        }
        w.now + self.detection_bound
    }

    pub fn on_restart(&mut self, host: HostId) {
        if let Some(old) = self.crashes.remove(&host) {
            self.censor(old);
        }
    }

    /// A watch ends before it completed (the host restarted, the run ended):
    /// what was measured still counts, with whatever eligibility is known.
    fn censor(&mut self, mut watch: CrashWatch) {
        if watch.everywhere.is_none() && watch.published.is_some() {
            self.measured.detections_censored += 1;
        }
        watch.eligible.get_or_insert((false, false));
        self.record(&watch, watch.published, watch.everywhere);
    }

    fn record(&mut self, w: &CrashWatch, published: Option<Time>, everywhere: Option<Time>) {
        let (detectable, audible) = w.eligible.unwrap_or((false, false));
        if let Some(p) = published {
            if detectable {
                self.measured.detections.push(p.since(w.at));
            } else {
                self.measured.detections_impaired.push(p.since(w.at));
            }
        }
        if let Some(e) = everywhere {
            if audible {
                self.measured.detections_everywhere.push(e.since(w.at));
            } else {
                self.measured.detections_impaired.push(e.since(w.at));
            }
        }
    }

    /// Watches whose verdict reached every live node and whose eligibility is
    /// known are recorded and closed.
    fn complete_watches(&mut self, now: Time) {
        for c in self.crashes.values_mut() {
            if c.published.is_some() && c.pending.is_empty() && c.everywhere.is_none() {
                c.everywhere = Some(now);
            }
        }
        let done: Vec<HostId> = self
            .crashes
            .iter()
            .filter(|(_, c)| c.everywhere.is_some() && c.eligible.is_some())
            .map(|(h, _)| *h)
            .collect();
        for h in done {
            if let Some(c) = self.crashes.remove(&h) {
                self.record(&c, c.published, c.everywhere);
            }
        }
    }

    pub fn on_notice(&mut self, w: &World, host: HostId, notice: &Notice) {
        match *notice {
            Notice::VerdictPublished { node, down } => {
                if let Some(h) = w.host_of(node) {
                    self.verdicts.push((w.now, h, down));
                }
            }
            Notice::VoteCast { subject, down } => {
                if let Some(h) = w.host_of(subject) {
                    self.votes.push((w.now, host, h, down));
                }
                if host == 0 {
                    self.audit.on_own_vote(subject, down);
                }
            }
            _ => {}
        }
        match *notice {
            Notice::VerdictPublished { node, down: false } => self.check_false_up(w, node),
            Notice::VerdictPublished { node, down: true } => {
                self.check_false_down(w, node, true);
                if let Some(h) = w.host_of(node) {
                    if let Some(c) = self.crashes.get_mut(&h) {
                        if c.node == node && c.published.is_none() {
                            c.published = Some(w.now);
                            c.pending = (0..w.hosts.len())
                                .filter(|x| *x != h && w.hosts[*x].node.is_some())
                                .collect();
                        }
                    }
                }
                self.complete_watches(w.now);
            }
            Notice::VerdictApplied { node, down: true } => {
                if let Some(h) = w.host_of(node) {
                    if let Some(c) = self.crashes.get_mut(&h) {
                        if c.node == node && c.published.is_some() {
                            c.pending.remove(&host);
                        }
                    }
                }
                self.complete_watches(w.now);
            }
            _ => {}
        }
    }

    /// Ground truth only: the host's process, not any node's view of it.
    fn check_false_up(&mut self, w: &World, node: NodeId) {
        let Some(h) = w.host_of(node) else { return };
        let host = &w.hosts[h];
        let running = host.node.as_ref().is_some_and(|n| n.id() == node);
        let dead_since = if running && host.paused {
            Some((host.last_impaired, "paused"))
        } else if running {
            None
        } else {
            self.died.get(&node).map(|t| (*t, "dead"))
        };
        let Some((since, how)) = dead_since else {
            return;
        };
        let dead_for = w.now.since(since);
        if dead_for > self.stable_window {
            self.violate(
                w.now,
                ViolationKind::FalseUp,
                format!(
                    "{node} (host {h}) published up after being {how} for {:.1} s",
                    dead_for.as_secs_f64()
                ),
            );
        }
    }

    /// Runs periodically: a node the authority keeps down although it has been
    /// healthy and reachable for long enough is as wrong as one marked down.
    pub fn check_kept_down(&mut self, w: &World) {
        let Some(authority) = w.authority() else {
            return;
        };
        let down: Vec<NodeId> = authority.state().down.iter().copied().collect();
        for node in down {
            if !self.kept_down.contains(&node) {
                self.check_false_down(w, node, false);
            }
        }
    }

    /// `transition`: the authority just marked `node` down; otherwise it has
    /// been keeping it down.
    fn check_false_down(&mut self, w: &World, node: NodeId, transition: bool) {
        let Some(xh) = w.host_of(node) else { return };
        let Some(authority) = w.authority() else {
            return;
        };
        let now = w.now;
        let stable = |h: HostId| {
            let host = &w.hosts[h];
            host.is_up() && now.since(host.stable_since()) > self.stable_window
        };
        if !stable(xh) || w.hosts[xh].node.as_ref().map(|n| n.id()) != Some(node) {
            return;
        }
        if !transition {
            // A verdict may rightly outlast its cause while flap damping
            // holds it, or while a restarted authority waits for votes.
            let held = authority
                .tally()
                .held_until(node)
                .is_some_and(|h| h + Duration::from_secs(1) > now);
            let grace =
                now.since(w.hosts[0].stable_since()) <= self.stable_window + self.startup_grace;
            if held || grace {
                return;
            }
        }
        // Observers by their current id only (a wiped host's old id is
        // nobody).
        let observers: Vec<HostId> = authority
            .state()
            .observers_of(node)
            .iter()
            .filter_map(|o| {
                w.host_of(*o)
                    .filter(|h| w.hosts[*h].node.as_ref().map(|n| n.id()) == Some(*o))
            })
            .collect();
        let counted: Vec<HostId> = observers
            .iter()
            .copied()
            .filter(|o| stable(*o) && w.clean(*o, 0))
            .collect();
        if counted.is_empty() {
            return;
        }
        // A verdict stands until a majority vouches: to bring a node back,
        // the observers that reach it must outnumber every other running
        // observer, paused or cut off from the authority (their last word
        // may have been "down", and silence does not withdraw it).
        let judged_by = if transition {
            counted.len()
        } else {
            observers.len()
        };
        self.measured.false_down_checks += 1;
        let reaching = counted.iter().filter(|o| w.clean(**o, xh)).count();
        if reaching * 2 > judged_by {
            if w.net.config().drop > LOSSY {
                self.measured.false_downs_tolerated += 1;
            } else {
                let what = if transition { "marked" } else { "kept" };
                self.violate(
                    now,
                    ViolationKind::FalseDown,
                    format!(
                        "node {node} (host {xh}) {what} down while {reaching} of {judged_by} counted observers reach it over clean links",
                    ),
                );
            }
            if !transition {
                self.kept_down.insert(node);
            }
        }
    }

    /// Scheduled `detection_bound` after a crash.
    pub fn check_detection(&mut self, w: &World, host: HostId, crash_id: u64, crashed_at: Time) {
        let h = &w.hosts[host];
        if h.crash_id != crash_id || h.node.is_some() || host == 0 {
            return; // Restarted since, or the authority itself.
        }
        let (detectable, audible) = self.eligibility(w, host, crashed_at);
        if let Some(c) = self.crashes.get_mut(&host) {
            c.eligible = Some((detectable, audible));
        }
        self.complete_watches(w.now);
        if !detectable {
            return;
        }
        self.measured.detection_checks += 1;
        let Some(node) = h.disk.node() else { return };
        let down = w.authority().is_some_and(|a| a.state().is_down(node));
        if !down {
            self.violate(
                w.now,
                ViolationKind::LateDetection,
                format!(
                    "node {node} (host {host}) crashed at {crashed_at} and is not down after {:?}",
                    self.detection_bound
                ),
            );
        }
    }

    /// Could the crash of `host` be detected in time (the authority and a
    /// majority of the node's observers up, settled since before the crash and
    /// connected to the authority), and could every live node hear of it
    /// (every live host settled and connected to the authority)?
    fn eligibility(&self, w: &World, host: HostId, crashed_at: Time) -> (bool, bool) {
        let settled = |t: Time| t + self.settle <= crashed_at;
        let ok = |o: HostId| {
            let oh = &w.hosts[o];
            oh.is_up() && settled(oh.stable_since()) && w.clean(o, 0)
        };
        let (Some(node), Some(started)) = (w.hosts[host].disk.node(), w.hosts[host].first_started)
        else {
            return (false, false);
        };
        if !ok(0) || !settled(started) {
            return (false, false);
        }
        let Some(authority) = w.authority() else {
            return (false, false);
        };
        let observers = authority.state().observers_of(node);
        let good = observers
            .iter()
            .filter_map(|o| w.host_of(*o))
            .filter(|o| ok(*o))
            .count();
        let detectable = !observers.is_empty() && good * 2 > observers.len();
        let audible = detectable && (0..w.hosts.len()).filter(|x| *x != host).all(ok);
        (detectable, audible)
    }

    /// Called periodically after the heal: do all nodes agree, with every
    /// node up and nobody suspected?
    pub fn check_convergence(&mut self, w: &World) {
        if self.converged_at.is_some() {
            return; // Checked again, in full, when the run ends.
        }
        self.recheck_convergence(w);
    }

    fn recheck_convergence(&mut self, w: &World) {
        match divergence(w, self.removal_bound) {
            None => {
                if self.converged_at.is_none() {
                    self.converged_at = Some(w.now);
                }
                self.divergence = None;
            }
            Some(why) => {
                self.converged_at = None;
                self.divergence = Some(why);
            }
        }
    }

    pub fn finish(&mut self, w: &World) {
        self.recheck_convergence(w);
        for (_, c) in std::mem::take(&mut self.crashes) {
            self.censor(c);
        }
        if self.converged_at.is_none() {
            let why = self.divergence.clone().unwrap_or_default();
            self.violate(
                w.now,
                ViolationKind::NoConvergence,
                format!(
                    "not converged {:?} after the heal: {why}",
                    w.now.since(self.heal_at)
                ),
            );
        }
    }

    pub fn convergence_time(&self) -> Option<Duration> {
        self.converged_at.map(|t| t.since(self.heal_at))
    }
}

/// Why the cluster has not converged, or `None` if it has. A replica behind
/// only by entries appended within `fresh` is still on its way.
fn divergence(w: &World, fresh: Duration) -> Option<String> {
    let Some(authority) = w.authority() else {
        return Some("authority not running".into());
    };
    let state = authority.state();
    for h in w.hosts.iter().filter(|h| !h.lost) {
        let Some(node) = &h.node else {
            return Some(format!("host {} not running", h.id));
        };
        if h.paused {
            return Some(format!("host {} paused", h.id));
        }
        if state.registry.get(node.id()) != Some(&node.info()) {
            return Some(format!("host {} not registered as it is", h.id));
        }
    }
    let gone = |id: &NodeId| {
        w.host_of(*id).is_some_and(|h| w.hosts[h].lost)
            || w.hosts
                .iter()
                .all(|h| h.node.as_ref().map(|n| n.id()) != Some(*id))
    };
    if authority.is_recovering() {
        return Some("authority still recovering its state".into());
    }
    if let Some(d) = state.down.iter().find(|d| !gone(d)) {
        return Some(format!("node {d} still down at the authority"));
    }
    for h in &w.hosts {
        let Some(node) = h.node.as_ref() else {
            continue;
        };
        let r = node.replica();
        let in_flight = r.log() == Some(authority.log_id())
            && r.seq() < authority.head()
            && w.appended_at
                .get(&(r.seq() + 1))
                .is_some_and(|t| w.now.since(*t) < fresh);
        if in_flight {
            continue;
        }
        if r.log() != Some(authority.log_id()) || r.seq() != authority.head() {
            return Some(format!(
                "host {} replica at {} of {:?}, authority at {}",
                h.id,
                r.seq(),
                r.log(),
                authority.head()
            ));
        }
        let health = node.health();
        if let Some(s) = state
            .registry
            .iter()
            .find(|i| health.is_suspect(i.id) && !gone(&i.id))
        {
            return Some(format!("host {} suspects {}", h.id, s.id));
        }
    }
    // Same position in the same log: the states must be equal too.
    let digest = state.digest();
    for h in &w.hosts {
        let Some(node) = &h.node else { continue };
        let replica = node.replica().state();
        if node.replica().seq() != authority.head() {
            continue;
        }
        // A node configured as the authority alone keeps membership only:
        // judged part by part, and its content parts must be empty.
        let roles = node.config().roles;
        if roles.authority && !roles.prism && !roles.store {
            let parts = [
                // The members, not the registry's history counter.
                (
                    "registry",
                    replica.registry.iter().eq(state.registry.iter()),
                ),
                ("observers", replica.observers == state.observers),
                ("down", replica.down == state.down),
                ("draining", replica.draining == state.draining),
                ("left", replica.left == state.left),
                ("removed", replica.removed == state.removed),
                ("no inventory", replica.inventory.is_empty()),
                ("no purchases", replica.purchases.is_empty()),
                ("no deletions", replica.deleted.is_empty()),
                ("no tombstones", replica.revoked.is_empty()),
            ];
            if let Some((part, _)) = parts.iter().find(|(_, ok)| !ok) {
                return Some(format!(
                    "host {} (the authority alone) replica differs from the authority at the same seq: {part}",
                    h.id
                ));
            }
            continue;
        }
        if replica.digest() != digest {
            let diff = replica.differences(state).join("; ");
            return Some(format!(
                "host {} replica differs from the authority at the same seq: {diff}",
                h.id
            ));
        }
    }
    None
}
