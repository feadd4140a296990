//! Configuration with the defaults the design targets (a crashed node down
//! everywhere in about a second, no false downs at 5% loss).

use crate::ids::{ClusterId, Roles, Zone};
use crate::time::Duration;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// How each node probes its subjects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingConfig {
    /// Time between probe rounds to one healthy subject.
    pub probe_interval: Duration,
    /// How long a direct ping waits for its ack before indirect probes start.
    pub probe_timeout: Duration,
    /// How long the indirect phase (ping-req through helpers plus a second
    /// direct ping) waits before the round counts as failed.
    pub indirect_timeout: Duration,
    /// Helpers asked to probe on our behalf in the indirect phase.
    pub indirect_probes: usize,
    /// Consecutive failed rounds before this observer votes the subject down.
    pub failure_threshold: u32,
    /// A vote change not yet acknowledged by the authority is re-sent this often.
    pub vote_retransmit: Duration,
    /// Standing down votes are refreshed this often (they expire at the authority).
    pub vote_refresh: Duration,
    /// A timer that fires later than this after its deadline means this node
    /// itself stalled (pause, overload): the round is restarted, not failed.
    pub stall_tolerance: Duration,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(100),
            indirect_timeout: Duration::from_millis(200),
            indirect_probes: 3,
            failure_threshold: 2,
            vote_retransmit: Duration::from_millis(150),
            vote_refresh: Duration::from_secs(1),
            stall_tolerance: Duration::from_millis(100),
        }
    }
}

impl PingConfig {
    /// One probe round that fails: direct phase then indirect phase.
    pub fn round_time(&self) -> Duration {
        self.probe_timeout + self.indirect_timeout
    }

    /// Worst case from a crash to this observer's down vote leaving it: the
    /// crash lands just after a successful round, then `failure_threshold`
    /// rounds fail back to back.
    pub fn vote_bound(&self) -> Duration {
        self.probe_interval + self.round_time() * self.failure_threshold
    }
}

/// How the authority turns votes into verdicts (cluster-wide settings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TallyConfig {
    /// Observers per subject (K). All peers while the cluster has at most K+1 nodes.
    pub observers: usize,
    /// A vote not refreshed within this time no longer counts.
    pub vote_ttl: Duration,
    /// After the authority starts it waits this long for observers to refresh
    /// their votes before it lets any node come back up.
    pub startup_grace: Duration,
    /// Flap damping: a node marked down more than `flap_threshold` times within
    /// `flap_window` stays down for a hold that doubles with every extra flap.
    pub flap_window: Duration,
    pub flap_threshold: u32,
    pub flap_hold_base: Duration,
    pub flap_hold_max: Duration,
    /// Observer assignments are recomputed at most this often while the
    /// membership changes (a join storm costs one recompute per period).
    pub observer_debounce: Duration,
}

impl Default for TallyConfig {
    fn default() -> Self {
        TallyConfig {
            observers: 5,
            vote_ttl: Duration::from_secs(3),
            startup_grace: Duration::from_secs(3),
            flap_window: Duration::from_secs(60),
            flap_threshold: 3,
            flap_hold_base: Duration::from_secs(2),
            flap_hold_max: Duration::from_secs(16),
            observer_debounce: Duration::from_millis(50),
        }
    }
}

/// The change feed: retention at the authority and pulling at the readers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedConfig {
    /// Entries kept in the log; a reader further behind must take a snapshot.
    pub retain: usize,
    /// Most entries in one pull answer.
    pub pull_limit: u32,
    /// How long the authority holds a pull that is at the end of the log.
    pub long_poll: Duration,
    /// Extra time a reader waits for an answer beyond `long_poll` before it
    /// asks again (covers a lost request or answer).
    pub rpc_margin: Duration,
    /// The authority sends an answer again if the reader's next pull (its
    /// acknowledgement) has not arrived after this long.
    pub resend: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            retain: 100_000,
            pull_limit: 1_000,
            long_poll: Duration::from_millis(500),
            rpc_margin: Duration::from_millis(150),
            resend: Duration::from_millis(100),
        }
    }
}

impl FeedConfig {
    /// How long a reader waits for any pull answer before asking again.
    pub fn pull_timeout(&self) -> Duration {
        self.long_poll + self.rpc_margin
    }
}

/// Content: replication, inventory reporting, scrub, repair, recovery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentConfig {
    /// Copies of every piece of content (R).
    pub replicas: usize,
    /// Durable copies before an upload is acknowledged (W <= R).
    pub write_quorum: usize,
    /// A request to the authority is re-sent this often...
    pub rpc_retry: Duration,
    /// ...until this much time has passed (then the client hears 503).
    pub rpc_timeout: Duration,
    /// A store re-runs its full scan-and-diff this often.
    pub resync_interval: Duration,
    /// A store verifies at most one local copy this often (background
    /// scrub)...
    pub scrub_interval: Duration,
    /// ...and rests after each long enough to hash no more than this many
    /// bytes per second on average, so an idle store stays idle.
    #[serde(default = "default_scrub_rate")]
    pub scrub_bytes_per_sec: u64,
    /// A copy to a store is given up after this long...
    #[serde(default = "default_transfer_timeout")]
    pub transfer_timeout: Duration,
    /// ...plus its size at this rate (bytes per second).
    #[serde(default = "default_transfer_rate")]
    pub transfer_min_rate: u64,
    /// Most inventory changes in one report.
    pub report_batch: usize,
    /// An unacknowledged inventory report is re-sent this often.
    pub report_retransmit: Duration,
    /// The authority looks for under- and over-replicated content this often.
    pub repair_interval: Duration,
    /// A store down this long no longer counts as holding its copies.
    pub repair_grace: Duration,
    /// A clone job not reported done by then is given up and retried.
    pub clone_timeout: Duration,
    /// Clone jobs in flight, in all and per source store.
    pub max_clone_jobs: usize,
    pub max_clone_jobs_per_store: usize,
    /// Expired purchases are pruned from the state this long after they
    /// expire (every prism checks expiry itself; pruning only reclaims space).
    pub purchase_prune_grace: Duration,
    /// After the authority starts from an empty state it answers
    /// "unavailable" rather than "not found" for at least this long, and
    /// until every node that came back has restored its purchases and every
    /// store has reported its inventory.
    pub recovery_window: Duration,
}

fn default_scrub_rate() -> u64 {
    4 << 20
}

fn default_transfer_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_transfer_rate() -> u64 {
    20_000_000
}

impl ContentConfig {
    /// How long scrub rests after verifying a copy of `size` bytes.
    pub fn scrub_pause(&self, size: u64) -> Duration {
        let paced = Duration::from_micros(
            (u128::from(size) * 1_000_000 / u128::from(self.scrub_bytes_per_sec.max(1))) as u64,
        );
        paced.max(self.scrub_interval)
    }

    /// How long the authority keeps a copy reported for deleted content,
    /// waiting for the placement of a re-upload to claim it.
    pub fn orphan_wait(&self) -> Duration {
        self.rpc_timeout * 3
    }

    /// How long a placement claim waits for a store's report of its new
    /// copy: well inside the prism's deadline for the answer.
    pub fn claim_wait(&self) -> Duration {
        self.rpc_timeout / 2
    }

    /// How long a surplus copy stays on its store after it left the
    /// inventory: a connected prism hears of it well within one ask.
    pub fn unlist_wait(&self) -> Duration {
        self.rpc_timeout
    }

    /// How long a copy of `size` bytes to a store may take.
    pub fn transfer_deadline(&self, size: u64) -> Duration {
        let rate = u128::from(self.transfer_min_rate.max(1));
        self.transfer_timeout + Duration::from_micros((u128::from(size) * 1_000_000 / rate) as u64)
    }
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            replicas: 2,
            write_quorum: 2,
            rpc_retry: Duration::from_millis(200),
            rpc_timeout: Duration::from_secs(3),
            resync_interval: Duration::from_secs(3600),
            // A full pass over 100 GiB takes about 7 hours; small copies
            // at 50 a second (a million in under 6 hours).
            scrub_interval: Duration::from_millis(20),
            scrub_bytes_per_sec: default_scrub_rate(),
            transfer_timeout: default_transfer_timeout(),
            transfer_min_rate: default_transfer_rate(),
            report_batch: 10_000,
            report_retransmit: Duration::from_millis(300),
            repair_interval: Duration::from_secs(1),
            repair_grace: Duration::from_secs(10),
            clone_timeout: Duration::from_secs(10),
            max_clone_jobs: 64,
            max_clone_jobs_per_store: 8,
            recovery_window: Duration::from_secs(5),
            purchase_prune_grace: Duration::from_secs(60),
        }
    }
}

/// Deliberate bugs that the simulator's oracles must catch. All off by
/// default; each one exists so a test can prove an oracle can fail.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedBugs {
    /// The tally downs a subject on a single vote instead of a majority.
    pub single_vote_downs: bool,
    /// The tally downs a subject on half of its live observers' votes (a
    /// tie taken for a majority).
    pub tie_downs: bool,
    /// Observers never vote anyone down.
    pub never_vote_down: bool,
    /// Observers never withdraw a down vote once cast.
    pub never_withdraw_votes: bool,
    /// A prism answers "not found" on a local miss without asking the authority.
    pub no_authority_fallback: bool,
    /// A prism ignores purchase expiry and removal when delivering.
    pub deliver_invalid_purchases: bool,
    /// A prism acknowledges an upload after the first durable copy.
    pub ack_after_one_copy: bool,
    /// The authority never repairs under-replicated content.
    pub no_repair: bool,
    /// A prism delivers from any holder, down or not.
    pub deliver_from_down_stores: bool,
    /// Replicas skip purchase removals in the feed.
    pub replica_skips_removals: bool,
    /// A node always asks to be woken now, with nothing to do.
    pub wake_without_work: bool,
    /// The tally brings a node up without a live, seasoned majority of its
    /// observers (bug 4 of issue 7: a dead node whose observers died).
    pub up_without_live_majority: bool,
    /// An observer silent since its down vote expired counts as vouching up.
    pub stale_votes_vouch: bool,
    /// A node reads expiry on its own wall clock, not the cluster's.
    pub own_wall_clock: bool,
    /// The authority drops every copy reported for deleted content at once,
    /// even one a re-upload's placement is on its way to claim, and accepts
    /// that placement anyway (bug 1 of issue 7, as the first version had it).
    pub drop_reported_deleted: bool,
    /// The authority answers "not found" to a revocation of a token it has
    /// already revoked (a retry whose first answer was lost).
    pub revoke_retry_not_found: bool,
    /// A prism delivers whatever the referrer.
    pub ignore_referrers: bool,
    /// A recovering authority answers "not found" for what it has not heard
    /// of yet (bug 7 of issue 7).
    pub deny_while_recovering: bool,
    /// Repair never drops a surplus copy (after a drain, a zone move or a
    /// re-upload's adopted copies).
    pub keep_surplus: bool,
    /// The authority refuses a re-upload's copy on a store marked from an
    /// earlier drop of the same hash at once, instead of waiting for the
    /// store's report of the new copy (an availability-oracle finding).
    pub refuse_marked_claims: bool,
    /// The authority ignores the removals stores report (a rotten copy
    /// found by scrub stays listed).
    pub ignore_reported_removals: bool,
    /// Repair orders a surplus copy dropped at once, before the prisms have
    /// heard it is no longer listed (a nemesis finding).
    pub drop_before_unlist: bool,
    /// A node is removed even while copies it holds are among the last R.
    pub remove_last_copies: bool,
    /// A removal is acknowledged and recorded nowhere.
    pub removal_not_recorded: bool,
}

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The address this node listens on and advertises.
    pub addr: SocketAddr,
    pub roles: Roles,
    pub zone: Zone,
    /// Relative storage capacity for placement (stores only).
    pub weight: u32,
    /// The one address a node needs to join.
    pub authority_addr: SocketAddr,
    /// If set, the node refuses to join any other cluster.
    pub cluster: Option<ClusterId>,
    pub ping: PingConfig,
    pub tally: TallyConfig,
    pub feed: FeedConfig,
    pub content: ContentConfig,
    /// How often an unanswered join is retried.
    pub join_retry: Duration,
    pub bugs: InjectedBugs,
}

impl NodeConfig {
    pub fn new(addr: SocketAddr, roles: Roles, zone: Zone, authority_addr: SocketAddr) -> Self {
        NodeConfig {
            addr,
            roles,
            zone,
            weight: 100,
            authority_addr,
            cluster: None,
            ping: PingConfig::default(),
            tally: TallyConfig::default(),
            feed: FeedConfig::default(),
            content: ContentConfig::default(),
            join_retry: Duration::from_millis(500),
            bugs: InjectedBugs::default(),
        }
    }

    /// Worst case from a crash to the authority's verdict when a majority of
    /// the subject's observers and the authority are up and connected: every
    /// observer's vote bound, plus enough vote retransmissions to get through
    /// heavy loss, plus the observer-assignment debounce.
    pub fn detection_bound(&self) -> Duration {
        self.ping.vote_bound()
            + self.ping.vote_retransmit * 8
            + self.tally.observer_debounce
            + Duration::from_millis(100)
    }

    /// Worst case from a verdict at the authority to every connected reader
    /// applying it: a pending long-poll answer, or re-asking after lost ones.
    pub fn propagation_bound(&self) -> Duration {
        self.feed.pull_timeout() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_detection_bound_is_within_two_seconds() {
        let cfg = NodeConfig::new(
            "127.0.0.1:1".parse().unwrap(),
            Roles::STORE,
            Zone::new("a"),
            "127.0.0.1:2".parse().unwrap(),
        );
        // 500 ms + 2 x 300 ms + 8 x 150 ms + 50 ms + 100 ms
        assert_eq!(cfg.detection_bound(), Duration::from_millis(2450));
        assert_eq!(cfg.ping.vote_bound(), Duration::from_millis(1100));
    }

    #[test]
    fn a_pull_waits_its_poll_and_margin_and_a_transfer_its_size_at_the_minimum_rate() {
        let feed = FeedConfig::default();
        assert_eq!(feed.pull_timeout(), feed.long_poll + feed.rpc_margin);
        let content = ContentConfig {
            transfer_min_rate: 1_000_000,
            ..ContentConfig::default()
        };
        let t = content.transfer_timeout;
        assert_eq!(content.transfer_deadline(0), t);
        assert_eq!(
            content.transfer_deadline(3_000_000),
            t + Duration::from_secs(3)
        );
    }
}

/// A configuration a node cannot start with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// An authority must listen on the address the other nodes join through.
    AuthorityAddrMismatch {
        addr: SocketAddr,
        authority_addr: SocketAddr,
    },
    /// A setting that must be positive is zero.
    Zero(&'static str),
    /// The probe timeouts do not fit in the probe interval.
    RoundLongerThanInterval,
    /// More acknowledged copies asked for than copies made.
    QuorumAboveReplicas,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::AuthorityAddrMismatch {
                addr,
                authority_addr,
            } => write!(
                f,
                "this node has the authority role, so its address {addr} must equal authority_addr {authority_addr}"
            ),
            ConfigError::Zero(what) => write!(f, "{what} must be greater than zero"),
            ConfigError::RoundLongerThanInterval => write!(
                f,
                "probe_timeout + indirect_timeout must not exceed probe_interval"
            ),
            ConfigError::QuorumAboveReplicas => write!(
                f,
                "content.write_quorum must not exceed content.replicas"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl NodeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.roles.authority && self.addr != self.authority_addr {
            return Err(ConfigError::AuthorityAddrMismatch {
                addr: self.addr,
                authority_addr: self.authority_addr,
            });
        }
        let positive = [
            ("ping.probe_interval", self.ping.probe_interval.is_zero()),
            ("ping.probe_timeout", self.ping.probe_timeout.is_zero()),
            (
                "ping.indirect_timeout",
                self.ping.indirect_timeout.is_zero(),
            ),
            ("ping.failure_threshold", self.ping.failure_threshold == 0),
            ("ping.vote_retransmit", self.ping.vote_retransmit.is_zero()),
            ("ping.vote_refresh", self.ping.vote_refresh.is_zero()),
            ("tally.observers", self.tally.observers == 0),
            ("tally.vote_ttl", self.tally.vote_ttl.is_zero()),
            ("feed.retain", self.feed.retain == 0),
            ("feed.pull_limit", self.feed.pull_limit == 0),
            ("feed.rpc_margin", self.feed.rpc_margin.is_zero()),
            ("feed.resend", self.feed.resend.is_zero()),
            ("join_retry", self.join_retry.is_zero()),
            ("weight", self.roles.store && self.weight == 0),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Zero(name));
        }
        if self.ping.round_time() > self.ping.probe_interval {
            return Err(ConfigError::RoundLongerThanInterval);
        }
        let c = &self.content;
        let positive = [
            ("content.replicas", c.replicas == 0),
            ("content.write_quorum", c.write_quorum == 0),
            ("content.rpc_retry", c.rpc_retry.is_zero()),
            ("content.scrub_interval", c.scrub_interval.is_zero()),
            ("content.scrub_bytes_per_sec", c.scrub_bytes_per_sec == 0),
            ("content.transfer_timeout", c.transfer_timeout.is_zero()),
            ("content.transfer_min_rate", c.transfer_min_rate == 0),
            ("content.report_batch", c.report_batch == 0),
            ("content.repair_interval", c.repair_interval.is_zero()),
            ("content.max_clone_jobs", c.max_clone_jobs == 0),
            (
                "content.max_clone_jobs_per_store",
                c.max_clone_jobs_per_store == 0,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Zero(name));
        }
        if c.write_quorum > c.replicas {
            return Err(ConfigError::QuorumAboveReplicas);
        }
        Ok(())
    }
}

#[cfg(test)]
mod validate_tests {
    use super::*;

    fn cfg() -> NodeConfig {
        NodeConfig::new(
            "127.0.0.1:1".parse().unwrap(),
            Roles::AUTHORITY,
            Zone::new("a"),
            "127.0.0.1:1".parse().unwrap(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(cfg().validate(), Ok(()));
    }

    #[test]
    fn authority_must_listen_where_nodes_join() {
        let mut c = cfg();
        c.authority_addr = "127.0.0.1:2".parse().unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::AuthorityAddrMismatch { .. })
        ));
    }

    #[test]
    fn zero_settings_are_named() {
        let mut c = cfg();
        c.tally.observers = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("tally.observers")));
        let mut c = cfg();
        c.ping.probe_timeout = Duration::from_secs(1);
        assert_eq!(c.validate(), Err(ConfigError::RoundLongerThanInterval));
        let mut c = cfg();
        c.content.write_quorum = 3;
        assert_eq!(c.validate(), Err(ConfigError::QuorumAboveReplicas));
    }
}

#[cfg(test)]
mod derived_tests {
    //! The durations derived from settings, and every check of `validate`.

    use super::*;

    fn cfg(roles: Roles) -> NodeConfig {
        let addr = "127.0.0.1:1".parse().unwrap();
        NodeConfig::new(addr, roles, Zone::new("a"), addr)
    }

    #[test]
    fn default_settings_are_the_documented_ones() {
        let c = ContentConfig::default();
        assert_eq!(c.scrub_bytes_per_sec, 4 * 1024 * 1024);
        assert_eq!(c.transfer_timeout, Duration::from_secs(30));
        assert_eq!(c.transfer_min_rate, 20_000_000);
    }

    #[test]
    fn derived_waits_follow_the_rpc_timeout() {
        let c = ContentConfig {
            rpc_timeout: Duration::from_secs(4),
            ..ContentConfig::default()
        };
        assert_eq!(c.orphan_wait(), Duration::from_secs(12));
        assert_eq!(c.claim_wait(), Duration::from_secs(2));
        assert_eq!(c.unlist_wait(), Duration::from_secs(4));
        let feed = FeedConfig {
            long_poll: Duration::from_secs(2),
            rpc_margin: Duration::from_millis(300),
            ..FeedConfig::default()
        };
        assert_eq!(feed.pull_timeout(), Duration::from_millis(2300));
        let mut n = cfg(Roles::STORE);
        n.feed = feed;
        assert_eq!(n.propagation_bound(), Duration::from_millis(9200));
    }

    #[test]
    fn a_probe_round_and_the_vote_bound_add_up_as_documented() {
        let p = PingConfig {
            probe_interval: Duration::from_millis(700),
            probe_timeout: Duration::from_millis(120),
            indirect_timeout: Duration::from_millis(230),
            failure_threshold: 3,
            ..PingConfig::default()
        };
        assert_eq!(p.round_time(), Duration::from_millis(350));
        assert_eq!(p.vote_bound(), Duration::from_millis(700 + 3 * 350));
        let mut n = cfg(Roles::STORE);
        n.ping = p;
        n.ping.vote_retransmit = Duration::from_millis(10);
        n.tally.observer_debounce = Duration::from_millis(40);
        assert_eq!(
            n.detection_bound(),
            Duration::from_millis(1750 + 80 + 40 + 100)
        );
    }

    #[test]
    fn scrub_rests_in_proportion_to_the_bytes_it_read_and_at_least_its_interval() {
        let c = ContentConfig {
            scrub_bytes_per_sec: 2_000_000,
            scrub_interval: Duration::from_millis(20),
            ..ContentConfig::default()
        };
        assert_eq!(c.scrub_pause(0), Duration::from_millis(20));
        assert_eq!(c.scrub_pause(10_000), Duration::from_millis(20));
        assert_eq!(c.scrub_pause(3_000_000), Duration::from_millis(1500));
        let t = ContentConfig {
            transfer_min_rate: 4_000_000,
            transfer_timeout: Duration::from_secs(2),
            ..ContentConfig::default()
        };
        assert_eq!(t.transfer_deadline(6_000_000), Duration::from_millis(3500));
    }

    #[test]
    fn a_store_needs_a_weight_and_any_node_that_is_not_the_authority_may_join_elsewhere() {
        let mut c = cfg(Roles::STORE);
        c.authority_addr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(c.validate(), Ok(()));
        c.weight = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("weight")));
        let mut p = cfg(Roles::PRISM);
        p.weight = 0;
        assert_eq!(p.validate(), Ok(()), "only stores are weighed");
    }

    #[test]
    fn every_setting_that_must_be_positive_is_named_when_zero() {
        type Set = fn(&mut NodeConfig);
        let cases: [(&str, Set); 24] = [
            ("ping.probe_interval", |c| {
                c.ping.probe_interval = Duration::ZERO
            }),
            ("ping.probe_timeout", |c| {
                c.ping.probe_timeout = Duration::ZERO
            }),
            ("ping.indirect_timeout", |c| {
                c.ping.indirect_timeout = Duration::ZERO
            }),
            ("ping.failure_threshold", |c| c.ping.failure_threshold = 0),
            ("ping.vote_retransmit", |c| {
                c.ping.vote_retransmit = Duration::ZERO
            }),
            ("ping.vote_refresh", |c| {
                c.ping.vote_refresh = Duration::ZERO
            }),
            ("tally.observers", |c| c.tally.observers = 0),
            ("tally.vote_ttl", |c| c.tally.vote_ttl = Duration::ZERO),
            ("feed.retain", |c| c.feed.retain = 0),
            ("feed.pull_limit", |c| c.feed.pull_limit = 0),
            ("feed.rpc_margin", |c| c.feed.rpc_margin = Duration::ZERO),
            ("feed.resend", |c| c.feed.resend = Duration::ZERO),
            ("join_retry", |c| c.join_retry = Duration::ZERO),
            ("content.replicas", |c| c.content.replicas = 0),
            ("content.write_quorum", |c| c.content.write_quorum = 0),
            ("content.rpc_retry", |c| {
                c.content.rpc_retry = Duration::ZERO
            }),
            ("content.scrub_interval", |c| {
                c.content.scrub_interval = Duration::ZERO
            }),
            ("content.scrub_bytes_per_sec", |c| {
                c.content.scrub_bytes_per_sec = 0
            }),
            ("content.transfer_timeout", |c| {
                c.content.transfer_timeout = Duration::ZERO
            }),
            ("content.transfer_min_rate", |c| {
                c.content.transfer_min_rate = 0
            }),
            ("content.report_batch", |c| c.content.report_batch = 0),
            ("content.repair_interval", |c| {
                c.content.repair_interval = Duration::ZERO
            }),
            ("content.max_clone_jobs", |c| c.content.max_clone_jobs = 0),
            ("content.max_clone_jobs_per_store", |c| {
                c.content.max_clone_jobs_per_store = 0
            }),
        ];
        for (name, set) in cases {
            let mut c = cfg(Roles::STORE);
            set(&mut c);
            assert_eq!(c.validate(), Err(ConfigError::Zero(name)));
            assert_eq!(
                ConfigError::Zero(name).to_string(),
                format!("{name} must be greater than zero")
            );
        }
    }

    #[test]
    fn a_round_may_fill_the_interval_and_the_quorum_may_equal_the_replicas() {
        let mut c = cfg(Roles::STORE);
        c.ping.probe_interval = c.ping.round_time();
        c.content.write_quorum = c.content.replicas;
        assert_eq!(c.validate(), Ok(()));
        c.ping.probe_interval -= Duration::from_micros(1);
        assert_eq!(c.validate(), Err(ConfigError::RoundLongerThanInterval));
    }

    #[test]
    fn errors_say_what_to_change() {
        let a = "127.0.0.1:1".parse().unwrap();
        let b = "127.0.0.1:2".parse().unwrap();
        let e = ConfigError::AuthorityAddrMismatch {
            addr: a,
            authority_addr: b,
        };
        assert_eq!(
            e.to_string(),
            "this node has the authority role, so its address 127.0.0.1:1 must equal authority_addr 127.0.0.1:2"
        );
        assert!(ConfigError::RoundLongerThanInterval
            .to_string()
            .contains("probe_interval"));
        assert!(ConfigError::QuorumAboveReplicas
            .to_string()
            .contains("write_quorum"));
    }
}
