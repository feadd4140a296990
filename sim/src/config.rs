//! What one simulation run is: cluster shape, network, clocks, node settings
//! and the fault schedule. Swarm mode draws all of it from the seed.

use crate::clients::Workload;
use crate::clock::SimClock;
use stretchfs_core::rng::{mix64, Rng, SeededRng};
use stretchfs_core::{
    ClusterId, ContentConfig, Duration, FeedConfig, InjectedBugs, NodeConfig, PingConfig, Roles,
    TallyConfig, Time, Zone,
};
use stretchfs_transport_sim::{HostId, LatencyModel, NetConfig};

/// One scheduled fault. Hosts are numbered from 0; host 0 is the authority.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The process dies: volatile state is lost, its disk is kept.
    Crash {
        host: HostId,
    },
    /// The process starts again from its disk, optionally on a new address.
    Restart {
        host: HostId,
        new_addr: bool,
    },
    /// The process stops running (GC pause, SIGSTOP) until `Resume`.
    Pause {
        host: HostId,
    },
    Resume {
        host: HostId,
    },
    /// Both directions between the two groups are cut.
    Split {
        a: Vec<HostId>,
        b: Vec<HostId>,
    },
    /// Messages from `from` to `to` are dropped; the other direction works.
    OneWay {
        from: HostId,
        to: HostId,
    },
    /// The host is cut off from every other host.
    Isolate {
        host: HostId,
    },
    /// Messages to and from the host are held for `duration`.
    ClogHost {
        host: HostId,
        duration: Duration,
    },
    /// Messages on one directed link are held for `duration`.
    ClogLink {
        from: HostId,
        to: HostId,
        duration: Duration,
    },
    /// Removes every partition and clog.
    HealNetwork,
    /// Changes loss, duplication, reordering and latency.
    SetNet(NetConfig),
    /// The liveness phase begins: every crashed host restarts, every paused
    /// host resumes, the network heals and becomes lossless.
    HealAll,
    /// One stored file on the host silently changes (`nth` durable file,
    /// byte `at`, both taken modulo what is there).
    BitRot {
        host: HostId,
        nth: usize,
        at: usize,
    },
    /// The host and its disks are gone for good (never restarts).
    LoseStore {
        host: HostId,
    },
    /// The authority crashes and its database is lost ("the redis database
    /// got expunged"). A `Restart` brings it back empty.
    WipeAuthority,
    /// A node crashes and its data directory is lost: it comes back (with a
    /// `Restart`) as a new node with empty state.
    WipeNode {
        host: HostId,
    },
    /// An admin starts draining a store.
    Drain {
        host: HostId,
    },
    /// An admin stops draining a store.
    Undrain {
        host: HostId,
    },
    /// The node is told to stop (SIGTERM): it tells the authority it is
    /// leaving. A `Crash` soon after ends the process.
    Leave {
        host: HostId,
    },
    /// The operator decommissions the host: it is never started again, and
    /// its disks go with it; a prism is asked to remove its node, again
    /// every two seconds until the authority agrees (it refuses while the
    /// node is up or holds any of the last R copies of something).
    Remove {
        host: HostId,
    },
}

#[derive(Clone, Debug)]
pub struct HostSpec {
    pub roles: Roles,
    pub zone: Zone,
    pub clock: SimClock,
    /// When the host first starts.
    pub start_at: Time,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub hosts: Vec<HostSpec>,
    pub net: NetConfig,
    pub ping: PingConfig,
    pub tally: TallyConfig,
    pub feed: FeedConfig,
    pub content: ContentConfig,
    pub bugs: InjectedBugs,
    pub workload: Workload,
    /// Largest wall-clock skew drawn for a node (either direction).
    pub max_wall_skew: Duration,
    /// Faults in time order.
    pub faults: Vec<(Time, Fault)>,
    /// When the final heal happens (a `HealAll` is scheduled then).
    pub heal_at: Time,
    /// How long after the heal every node must agree.
    pub liveness_bound: Duration,
    /// Test only: mixes a non-reproducible value into the run so the
    /// determinism check has something to catch.
    pub inject_nondeterminism: bool,
}

impl SimConfig {
    /// A calm cluster of `n` hosts in `zones` zones with default settings and
    /// no faults; scenarios add theirs.
    pub fn calm(seed: u64, n: usize, zones: usize) -> SimConfig {
        let hosts = (0..n)
            .map(|i| HostSpec {
                roles: role_of(i),
                zone: Zone::new(format!("zone-{}", i % zones.max(1))),
                clock: SimClock::EXACT,
                start_at: Time::from_millis(i as u64 * 10),
            })
            .collect();
        let mut cfg = SimConfig {
            seed,
            hosts,
            net: NetConfig::default(),
            ping: PingConfig::default(),
            tally: TallyConfig::default(),
            feed: FeedConfig::default(),
            content: ContentConfig {
                // Scrub fast enough that a simulated run sees every copy
                // checked (production scrubs at its own, slower, pace).
                scrub_interval: Duration::from_millis(20),
                scrub_bytes_per_sec: 1 << 30,
                // Simulated copies are small and the network fast.
                transfer_timeout: Duration::from_secs(2),
                ..ContentConfig::default()
            },
            bugs: InjectedBugs::default(),
            workload: Workload::off(),
            max_wall_skew: Duration::ZERO,
            faults: Vec::new(),
            heal_at: Time::from_secs(30),
            liveness_bound: Duration::ZERO,
            inject_nondeterminism: false,
        };
        cfg.liveness_bound = cfg.default_liveness_bound();
        cfg
    }

    /// Node settings for host `i`; the simulator fills in the address.
    pub fn node_config(
        &self,
        i: HostId,
        addr: std::net::SocketAddr,
        authority: std::net::SocketAddr,
    ) -> NodeConfig {
        let h = &self.hosts[i];
        let mut c = NodeConfig::new(addr, h.roles, h.zone.clone(), authority);
        c.ping = self.ping.clone();
        c.tally = self.tally.clone();
        c.feed = self.feed.clone();
        c.content = self.content.clone();
        c.bugs = self.bugs.clone();
        // Configured, as in production: a node that lost its data directory
        // (or an authority that lost its database) stays in this cluster.
        c.cluster = Some(self.cluster_id());
        c
    }

    pub fn cluster_id(&self) -> ClusterId {
        ClusterId(u128::from(mix64(self.seed)) << 64 | u128::from(mix64(!self.seed)) | 1)
    }

    /// A calm cluster with the client workload running from 3 s until
    /// `heal_at` + 5 s.
    pub fn with_clients(mut self) -> SimConfig {
        self.workload = Workload::steady(Time::from_secs(3), self.heal_at + Duration::from_secs(5));
        self
    }

    /// The template node config (host 0's), for the bounds derived from it.
    pub fn template(&self) -> NodeConfig {
        let a = "10.0.0.1:7000".parse().expect("literal address");
        self.node_config(0, a, a)
    }

    /// Long enough for the worst flap-damping hold, the authority's startup
    /// grace, a detection, the feed and a rejoin after a heal.
    pub fn default_liveness_bound(&self) -> Duration {
        let t = self.template();
        let repair = self.content.repair_grace
            + self.content.repair_interval * 4
            + self.content.clone_timeout;
        // A recovering authority waits up to four windows for a store its
        // replicas knew of (and may start a few seconds after the heal).
        let recovery = self.content.recovery_window * 4 + Duration::from_secs(5);
        (self.tally.flap_hold_max + self.tally.startup_grace)
            .max(repair)
            .max(recovery)
            + t.detection_bound()
            + t.propagation_bound()
            + Duration::from_secs(5)
    }

    pub fn end(&self) -> Time {
        self.heal_at + self.liveness_bound
    }

    pub fn schedule(&mut self, at: Time, fault: Fault) {
        let pos = self.faults.partition_point(|(t, _)| *t <= at);
        self.faults.insert(pos, (at, fault));
    }

    /// Swarm mode: everything drawn from the seed (TigerBeetle's VOPR does
    /// the same): cluster size, zones, loss 0-20%, duplication, reordering,
    /// latency, partition kinds, crash and pause rates, clock skew and drift.
    pub fn swarm(seed: u64) -> SimConfig {
        let mut cfg = SimConfig::swarm_without_operator(seed);
        cfg.add_operator(seed);
        cfg
    }

    /// The swarm's draw before operator actions (leaves, undrains, a short
    /// log) joined it: the shape the scenarios named by seed were found in.
    pub fn swarm_without_operator(seed: u64) -> SimConfig {
        let mut r = SeededRng::stream(seed, "swarm");
        let n = 3 + r.below(10) as usize;
        let zones = 1 + r.below(3) as usize;
        let mut cfg = SimConfig::calm(seed, n, zones);
        cfg.max_wall_skew = Duration::from_millis(500);
        for h in &mut cfg.hosts {
            h.clock = SimClock {
                offset_us: r.below(60_000_000),
                drift_ppm: r.below(2001) as i64 - 1000,
                wall_skew_us: r.below(1_000_001) as i64 - 500_000,
            };
            h.start_at = Time::from_micros(r.below(1_000_000));
        }
        cfg.hosts[0].start_at = Time::ZERO;
        // One clock in four seeds far off (a broken NTP), authority included:
        // the cluster's median clock must hide it. Its own stream, so the
        // rest of the draw is unchanged.
        let mut wild = SeededRng::stream(seed, "wild clock");
        if n >= 3 && wild.below(4) == 0 {
            let host = wild.below(n as u64) as usize;
            let secs = 2 + wild.below(7) as i64;
            let sign = if wild.below(2) == 0 { 1 } else { -1 };
            cfg.hosts[host].clock.wall_skew_us = sign * secs * 1_000_000;
        }
        // One seed in three with a prism elsewhere (host 3) runs the
        // authority alone on host 0, so its replica keeps membership only.
        // Its own stream, so the rest of the draw is unchanged.
        let mut alone = SeededRng::stream(seed, "authority alone");
        if n >= 4 && alone.below(3) == 0 {
            cfg.hosts[0].roles = Roles::AUTHORITY;
        }
        cfg.net = draw_net(&mut r);
        let fault_start = Time::from_secs(5);
        let fault_span = 40_000_000u64;
        cfg.heal_at = fault_start + Duration::from_micros(fault_span);
        let at = |r: &mut SeededRng| fault_start + Duration::from_micros(r.below(fault_span));
        let secs = |r: &mut SeededRng, lo: f64, hi: f64| {
            Duration::from_secs_f64(lo + (hi - lo) * r.unit())
        };
        // Store crashes, some restarting on a new address.
        for _ in 0..r.below(4) {
            let host = 1 + r.below(n as u64 - 1) as usize;
            let t = at(&mut r);
            let down = secs(&mut r, 0.5, 15.0);
            let new_addr = r.chance(0.3);
            cfg.schedule(t, Fault::Crash { host });
            cfg.schedule(t + down, Fault::Restart { host, new_addr });
        }
        // Authority crash.
        if r.chance(0.3) {
            let t = at(&mut r);
            let down = secs(&mut r, 0.5, 8.0);
            cfg.schedule(t, Fault::Crash { host: 0 });
            cfg.schedule(
                t + down,
                Fault::Restart {
                    host: 0,
                    new_addr: false,
                },
            );
        }
        // Pauses, some longer than the detection bound.
        for _ in 0..r.below(3) {
            let host = r.below(n as u64) as usize;
            let t = at(&mut r);
            cfg.schedule(t, Fault::Pause { host });
            cfg.schedule(t + secs(&mut r, 0.1, 5.0), Fault::Resume { host });
        }
        // Network episodes.
        for _ in 0..r.below(3) {
            let t = at(&mut r);
            let len = secs(&mut r, 0.5, 10.0);
            let fault = match r.below(5) {
                0 => {
                    let mut a = Vec::new();
                    let mut b = Vec::new();
                    for h in 0..n {
                        if r.chance(0.5) {
                            a.push(h)
                        } else {
                            b.push(h)
                        }
                    }
                    Fault::Split { a, b }
                }
                1 => {
                    let from = r.below(n as u64) as usize;
                    let to = (from + 1 + r.below(n as u64 - 1) as usize) % n;
                    Fault::OneWay { from, to }
                }
                2 => Fault::Isolate {
                    host: r.below(n as u64) as usize,
                },
                3 => Fault::ClogHost {
                    host: r.below(n as u64) as usize,
                    duration: len,
                },
                _ => {
                    let from = r.below(n as u64) as usize;
                    let to = (from + 1 + r.below(n as u64 - 1) as usize) % n;
                    Fault::ClogLink {
                        from,
                        to,
                        duration: len,
                    }
                }
            };
            let heals = !matches!(fault, Fault::ClogHost { .. } | Fault::ClogLink { .. });
            cfg.schedule(t, fault);
            if heals {
                cfg.schedule(t + len, Fault::HealNetwork);
            }
        }
        // Content faults.
        let stores: Vec<HostId> = (0..n).filter(|h| cfg.hosts[*h].roles.store).collect();
        let prisms: Vec<HostId> = (0..n).filter(|h| cfg.hosts[*h].roles.prism).collect();
        for _ in 0..r.below(4) {
            if stores.is_empty() {
                break;
            }
            let host = stores[r.below(stores.len() as u64) as usize];
            let (nth, byte) = (r.below(1000) as usize, r.below(100_000) as usize);
            cfg.schedule(
                at(&mut r),
                Fault::BitRot {
                    host,
                    nth,
                    at: byte,
                },
            );
        }
        if stores.len() >= 3 && r.chance(0.25) {
            let host = stores[r.below(stores.len() as u64) as usize];
            cfg.schedule(at(&mut r), Fault::LoseStore { host });
        }
        if r.chance(0.2) {
            let t = at(&mut r);
            cfg.schedule(t, Fault::WipeAuthority);
            cfg.schedule(
                t + secs(&mut r, 0.5, 5.0),
                Fault::Restart {
                    host: 0,
                    new_addr: false,
                },
            );
        }
        if !prisms.is_empty() && r.chance(0.25) {
            let host = prisms[r.below(prisms.len() as u64) as usize];
            if host != 0 {
                let t = at(&mut r);
                cfg.schedule(t, Fault::WipeNode { host });
                cfg.schedule(
                    t + secs(&mut r, 0.5, 5.0),
                    Fault::Restart {
                        host,
                        new_addr: false,
                    },
                );
            }
        }
        if stores.len() >= 3 && r.chance(0.2) {
            let host = stores[r.below(stores.len() as u64) as usize];
            cfg.schedule(at(&mut r), Fault::Drain { host });
        }
        cfg.workload = Workload::steady(Time::from_secs(3), cfg.heal_at + Duration::from_secs(25));
        cfg.liveness_bound = cfg.default_liveness_bound();
        cfg
    }

    /// What an operator does, from its own stream so the fault draw stays
    /// as it was.
    fn add_operator(&mut self, seed: u64) {
        let cfg = self;
        let n = cfg.hosts.len();
        let stores: Vec<HostId> = (0..n).filter(|h| cfg.hosts[*h].roles.store).collect();
        let fault_start = Time::from_secs(5);
        let fault_span = cfg.heal_at.since(fault_start).as_micros() as u64;
        let at = |r: &mut SeededRng| fault_start + Duration::from_micros(r.below(fault_span));
        let secs = |r: &mut SeededRng, lo: f64, hi: f64| {
            Duration::from_secs_f64(lo + (hi - lo) * r.unit())
        };
        let mut op = SeededRng::stream(seed, "operator");
        if stores.len() >= 3 && op.chance(0.2) {
            // A drain taken back before it finished.
            let host = stores[op.below(stores.len() as u64) as usize];
            let t = at(&mut op);
            cfg.schedule(t, Fault::Drain { host });
            cfg.schedule(t + secs(&mut op, 0.5, 10.0), Fault::Undrain { host });
        }
        for _ in 0..op.below(3) {
            // A graceful stop (leave) and a rejoin from the same disk.
            let host = 1 + op.below(n as u64 - 1) as usize;
            let t = at(&mut op);
            cfg.schedule(t, Fault::Leave { host });
            cfg.schedule(t + Duration::from_millis(200), Fault::Crash { host });
            let down = secs(&mut op, 0.5, 10.0);
            cfg.schedule(
                t + Duration::from_millis(200) + down,
                Fault::Restart {
                    host,
                    new_addr: false,
                },
            );
        }
        if op.chance(0.5) {
            // A short log: readers that fall behind take snapshots.
            cfg.feed.retain = 20 + op.below(300) as usize;
        }
        // The cluster grows and shrinks, from its own stream again.
        let mut g = SeededRng::stream(seed, "grow and shrink");
        if g.chance(0.25) {
            // A new node joins mid-run: mostly a store, sometimes a prism.
            let zones: Vec<Zone> = cfg
                .hosts
                .iter()
                .map(|h| h.zone.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let zone = zones[g.below(zones.len() as u64) as usize].clone();
            cfg.hosts.push(HostSpec {
                roles: if g.chance(0.75) {
                    Roles::STORE
                } else {
                    Roles::PRISM
                },
                zone,
                clock: SimClock {
                    offset_us: g.below(60_000_000),
                    drift_ppm: g.below(2001) as i64 - 1000,
                    wall_skew_us: g.below(1_000_001) as i64 - 500_000,
                },
                start_at: at(&mut g),
            });
        }
        if stores.len() >= 4 && g.chance(0.15) {
            // A store leaves for good: it says so, stops, and never returns.
            let host = stores[g.below(stores.len() as u64) as usize];
            let t = at(&mut g);
            cfg.schedule(t, Fault::Leave { host });
            cfg.schedule(t + Duration::from_millis(200), Fault::LoseStore { host });
        }
        // A store decommissioned the way an operator does it: drained,
        // stopped, then removed (asked until the authority agrees).
        let mut d = SeededRng::stream(seed, "decommission");
        if stores.len() >= 4 && d.chance(0.2) {
            let host = stores[d.below(stores.len() as u64) as usize];
            let span = fault_span / 2;
            let t = fault_start + Duration::from_micros(d.below(span));
            cfg.schedule(t, Fault::Drain { host });
            let stop = t + secs(&mut d, 3.0, 15.0);
            cfg.schedule(stop, Fault::Leave { host });
            cfg.schedule(stop + Duration::from_millis(200), Fault::Crash { host });
            cfg.schedule(stop + Duration::from_secs(1), Fault::Remove { host });
        }
    }

    /// One line describing the drawn fault mix.
    pub fn describe(&self) -> String {
        let count = |f: &dyn Fn(&Fault) -> bool| self.faults.iter().filter(|(_, x)| f(x)).count();
        format!(
            "nodes={} zones={} loss={:.1}% dup={:.1}% reorder={:.1}% latency={:?}+exp({:?}) crashes={} authority_crashes={} pauses={} partitions={} clogs={} bitrot={} lost_stores={} authority_wipes={} node_wipes={} drains={} undrains={} leaves={} joins={} removals={} retain={}",
            self.hosts.len(),
            self.hosts.iter().map(|h| &h.zone).collect::<std::collections::BTreeSet<_>>().len(),
            self.net.drop * 100.0,
            self.net.duplicate * 100.0,
            self.net.reorder * 100.0,
            self.net.latency.base,
            self.net.latency.mean_extra,
            count(&|f| matches!(f, Fault::Crash { host } if *host != 0)),
            count(&|f| matches!(f, Fault::Crash { host: 0 })),
            count(&|f| matches!(f, Fault::Pause { .. })),
            count(&|f| matches!(f, Fault::Split { .. } | Fault::OneWay { .. } | Fault::Isolate { .. })),
            count(&|f| matches!(f, Fault::ClogHost { .. } | Fault::ClogLink { .. })),
            count(&|f| matches!(f, Fault::BitRot { .. })),
            count(&|f| matches!(f, Fault::LoseStore { .. })),
            count(&|f| matches!(f, Fault::WipeAuthority)),
            count(&|f| matches!(f, Fault::WipeNode { .. })),
            count(&|f| matches!(f, Fault::Drain { .. })),
            count(&|f| matches!(f, Fault::Undrain { .. })),
            count(&|f| matches!(f, Fault::Leave { .. })),
            self.hosts.iter().filter(|h| h.start_at > Time::from_secs(1)).count(),
            count(&|f| matches!(f, Fault::Remove { .. })),
            self.feed.retain,
        )
    }
}

/// Host 0 is the authority and a prism; of the rest every third is a prism
/// and the others are stores.
fn role_of(i: usize) -> Roles {
    match i {
        0 => Roles {
            authority: true,
            store: false,
            prism: true,
        },
        i if i % 3 == 0 => Roles::PRISM,
        _ => Roles::STORE,
    }
}

fn draw_net(r: &mut SeededRng) -> NetConfig {
    let drop = match r.below(10) {
        0..=3 => 0.0,
        4..=6 => 0.05 * r.unit(),
        _ => 0.05 + 0.15 * r.unit(),
    };
    let duplicate = if r.chance(0.5) { 0.05 * r.unit() } else { 0.0 };
    let (reorder, reorder_delay) = if r.chance(0.5) {
        (
            0.2 * r.unit(),
            Duration::from_micros(1_000 + r.below(29_000)),
        )
    } else {
        (0.0, Duration::from_millis(20))
    };
    let latency = if r.chance(0.5) {
        LatencyModel::lan()
    } else {
        LatencyModel {
            base: Duration::from_micros(50 + r.below(950)),
            mean_extra: Duration::from_micros(100 + r.below(2_900)),
            spike_chance: 0.01 * r.unit(),
            spike: Duration::from_millis(1 + r.below(50)),
        }
    };
    NetConfig {
        latency,
        drop,
        duplicate,
        reorder,
        reorder_delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_draw_is_a_function_of_the_seed() {
        let a = SimConfig::swarm(5);
        let b = SimConfig::swarm(5);
        assert_eq!(a.faults, b.faults);
        assert_eq!(a.net, b.net);
        assert_eq!(a.describe(), b.describe());
        let differs = (0..20).any(|s| SimConfig::swarm(s).describe() != a.describe());
        assert!(differs);
    }

    #[test]
    fn swarm_faults_fall_before_the_heal_and_in_order() {
        for seed in 0..200 {
            let c = SimConfig::swarm(seed);
            assert!(c.faults.windows(2).all(|w| w[0].0 <= w[1].0));
            assert!(c.hosts.len() >= 3);
            assert!(c.net.drop <= 0.2);
            let _ = &c.hosts[0]
                .roles
                .authority
                .then_some(())
                .expect("host 0 is the authority");
        }
    }
}
