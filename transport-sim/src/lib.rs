//! A seeded simulated network carrying core envelopes between hosts: latency
//! distribution, loss, duplication, reordering, symmetric and asymmetric
//! partitions, isolation and clogging. Every random draw comes from the seed,
//! one stream per concern, so enabling one fault does not shift the others.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use stretchfs_core::rng::{Rng, SeededRng};
use stretchfs_core::{Duration, Envelope, Time, Transport};

/// A simulated machine. Addresses map to hosts; a host keeps its id when the
/// node on it restarts on a new address.
pub type HostId = usize;

/// One-way latency: `base`, plus an exponential tail with mean `mean_extra`,
/// plus, with probability `spike_chance`, a uniform spike up to `spike`.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyModel {
    pub base: Duration,
    pub mean_extra: Duration,
    pub spike_chance: f64,
    pub spike: Duration,
}

impl LatencyModel {
    /// A quiet LAN: ~0.3 ms typical, rare spikes to 10 ms.
    pub fn lan() -> LatencyModel {
        LatencyModel {
            base: Duration::from_micros(100),
            mean_extra: Duration::from_micros(200),
            spike_chance: 0.001,
            spike: Duration::from_millis(10),
        }
    }

    /// Upper bound used by oracles when they need one (spikes included).
    pub fn typical_max(&self) -> Duration {
        self.base + self.mean_extra * 10 + self.spike
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    pub latency: LatencyModel,
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is held back by up to `reorder_delay`,
    /// overtaking and overtaken by others.
    pub reorder: f64,
    pub reorder_delay: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: LatencyModel::lan(),
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(20),
        }
    }
}

/// What the network did with messages, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub partitioned: u64,
    pub unroutable: u64,
    pub duplicated: u64,
    pub clogged: u64,
}

/// A message the network will hand to `to` at `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub at: Time,
    pub from: HostId,
    pub to: HostId,
    pub to_addr: SocketAddr,
    pub envelope: Envelope,
}

struct Streams {
    latency: SeededRng,
    drop: SeededRng,
    duplicate: SeededRng,
    reorder: SeededRng,
}

pub struct SimNet {
    cfg: NetConfig,
    rng: Streams,
    hosts: BTreeMap<SocketAddr, HostId>,
    /// Directed links that drop everything.
    blocked: BTreeSet<(HostId, HostId)>,
    clogged_links: BTreeMap<(HostId, HostId), Time>,
    clogged_hosts: BTreeMap<HostId, Time>,
    pending: Vec<Delivery>,
    stats: NetStats,
}

impl SimNet {
    pub fn new(seed: u64, cfg: NetConfig) -> SimNet {
        SimNet {
            cfg,
            rng: Streams {
                latency: SeededRng::stream(seed, "net.latency"),
                drop: SeededRng::stream(seed, "net.drop"),
                duplicate: SeededRng::stream(seed, "net.duplicate"),
                reorder: SeededRng::stream(seed, "net.reorder"),
            },
            hosts: BTreeMap::new(),
            blocked: BTreeSet::new(),
            clogged_links: BTreeMap::new(),
            clogged_hosts: BTreeMap::new(),
            pending: Vec::new(),
            stats: NetStats::default(),
        }
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    pub fn set_config(&mut self, cfg: NetConfig) {
        self.cfg = cfg;
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// `addr` now reaches `host` (a node started or moved there).
    pub fn attach(&mut self, addr: SocketAddr, host: HostId) {
        self.hosts.insert(addr, host);
    }

    /// Nothing listens on `addr` any more.
    pub fn detach(&mut self, addr: SocketAddr) {
        self.hosts.remove(&addr);
    }

    pub fn host_of(&self, addr: SocketAddr) -> Option<HostId> {
        self.hosts.get(&addr).copied()
    }

    /// Drop everything from `from` to `to` (one direction).
    pub fn block(&mut self, from: HostId, to: HostId) {
        self.blocked.insert((from, to));
    }

    /// Both directions between every host of `a` and every host of `b`.
    pub fn partition(&mut self, a: &[HostId], b: &[HostId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// Cut `host` off from all of `others`, both ways.
    pub fn isolate(&mut self, host: HostId, others: &[HostId]) {
        self.partition(&[host], others);
    }

    /// Hold every message on the link until `until` (FoundationDB's clogging).
    pub fn clog_link(&mut self, from: HostId, to: HostId, until: Time) {
        self.clogged_links.insert((from, to), until);
    }

    /// Hold every message to or from `host` until `until`.
    pub fn clog_host(&mut self, host: HostId, until: Time) {
        self.clogged_hosts.insert(host, until);
    }

    /// Removes every partition and clog.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.clogged_links.clear();
        self.clogged_hosts.clear();
    }

    /// No partition and no clog on the directed link at `now`.
    pub fn is_clean(&self, now: Time, from: HostId, to: HostId) -> bool {
        !self.blocked.contains(&(from, to)) && self.clogged_until(now, from, to).is_none()
    }

    fn clogged_until(&self, now: Time, from: HostId, to: HostId) -> Option<Time> {
        let link = self.clogged_links.get(&(from, to)).copied();
        let a = self.clogged_hosts.get(&from).copied();
        let b = self.clogged_hosts.get(&to).copied();
        [link, a, b]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .max()
    }

    /// One draw from the latency distribution (for traffic modelled outside
    /// the message path, such as bulk transfers).
    pub fn sample_latency(&mut self) -> Duration {
        self.latency()
    }

    fn latency(&mut self) -> Duration {
        let m = &self.cfg.latency;
        let r = &mut self.rng.latency;
        let u = r.unit().max(f64::MIN_POSITIVE);
        let mut us = m.base.as_micros() as f64 + m.mean_extra.as_micros() as f64 * -u.ln();
        if r.chance(m.spike_chance) {
            us += m.spike.as_micros() as f64 * r.unit();
        }
        Duration::from_micros(us as u64)
    }

    /// A transport handle for `from` sending at `now`.
    pub fn endpoint(&mut self, now: Time, from: HostId) -> SimEndpoint<'_> {
        SimEndpoint {
            net: self,
            now,
            from,
        }
    }

    /// Routes one envelope; its deliveries (zero, one or two) are queued.
    pub fn send(&mut self, now: Time, from: HostId, to_addr: SocketAddr, envelope: Envelope) {
        self.stats.sent += 1;
        let Some(to) = self.host_of(to_addr) else {
            self.stats.unroutable += 1;
            return;
        };
        if self.blocked.contains(&(from, to)) {
            self.stats.partitioned += 1;
            return;
        }
        if self.rng.drop.chance(self.cfg.drop) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.duplicate.chance(self.cfg.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let clog = self.clogged_until(now, from, to);
        if clog.is_some() {
            self.stats.clogged += 1;
        }
        if copies == 2 {
            let at = self.arrival(now, clog);
            self.queue(at, from, to, to_addr, envelope.clone());
        }
        let at = self.arrival(now, clog);
        self.queue(at, from, to, to_addr, envelope);
    }

    fn arrival(&mut self, now: Time, clog: Option<Time>) -> Time {
        let mut at = clog.unwrap_or(now) + self.latency();
        if self.rng.reorder.chance(self.cfg.reorder) {
            at += self.cfg.reorder_delay.mul_f64(self.rng.reorder.unit());
        }
        at
    }

    fn queue(
        &mut self,
        at: Time,
        from: HostId,
        to: HostId,
        to_addr: SocketAddr,
        envelope: Envelope,
    ) {
        self.stats.delivered += 1;
        self.pending.push(Delivery {
            at,
            from,
            to,
            to_addr,
            envelope,
        });
    }

    /// Deliveries queued since the last call.
    pub fn take_deliveries(&mut self) -> std::vec::Drain<'_, Delivery> {
        self.pending.drain(..)
    }
}

/// One host's view of the network at one instant: the [`Transport`] the
/// simulator hands node outputs to.
pub struct SimEndpoint<'a> {
    net: &'a mut SimNet,
    now: Time,
    from: HostId,
}

impl Transport for SimEndpoint<'_> {
    fn send(&mut self, to: SocketAddr, envelope: Envelope) {
        self.net.send(self.now, self.from, to, envelope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stretchfs_core::{ClusterId, Message, NodeId, PROTOCOL_VERSION};

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 7000))
    }

    fn env(probe: u64) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            cluster: ClusterId(1),
            from: NodeId(1),
            from_addr: addr(1),
            sent_at: stretchfs_core::WallTime::default(),
            msg: Message::Ping { probe },
        }
    }

    fn net(seed: u64, cfg: NetConfig) -> SimNet {
        let mut n = SimNet::new(seed, cfg);
        n.attach(addr(1), 1);
        n.attach(addr(2), 2);
        n.attach(addr(3), 3);
        n
    }

    fn run(n: &mut SimNet, count: u64) -> Vec<Delivery> {
        for i in 0..count {
            n.send(Time::from_millis(i), 1, addr(2), env(i));
        }
        n.take_deliveries().collect()
    }

    #[test]
    fn same_seed_same_fates() {
        let cfg = NetConfig {
            drop: 0.1,
            duplicate: 0.05,
            reorder: 0.1,
            ..NetConfig::default()
        };
        let a = run(&mut net(9, cfg.clone()), 500);
        let b = run(&mut net(9, cfg.clone()), 500);
        assert_eq!(a, b);
        let c = run(&mut net(10, cfg), 500);
        assert_ne!(a, c);
    }

    #[test]
    fn loss_and_duplication_rates_are_roughly_as_configured() {
        let cfg = NetConfig {
            drop: 0.2,
            duplicate: 0.1,
            ..NetConfig::default()
        };
        let mut n = net(1, cfg);
        let d = run(&mut n, 10_000);
        let lost = n.stats().lost;
        assert!((1_700..2_300).contains(&lost), "lost {lost}");
        let dups = n.stats().duplicated;
        assert!((600..1_000).contains(&dups), "duplicated {dups}");
        assert_eq!(d.len() as u64, 10_000 - lost + dups);
    }

    #[test]
    fn enabling_duplication_does_not_shift_losses() {
        let base = NetConfig {
            drop: 0.1,
            ..NetConfig::default()
        };
        let mut a = net(4, base.clone());
        let mut b = net(
            4,
            NetConfig {
                duplicate: 0.3,
                ..base
            },
        );
        let lost_a: BTreeSet<u64> = lost_probes(&mut a);
        let lost_b: BTreeSet<u64> = lost_probes(&mut b);
        assert_eq!(lost_a, lost_b);
    }

    fn lost_probes(n: &mut SimNet) -> BTreeSet<u64> {
        let got: BTreeSet<u64> = run(n, 1000)
            .into_iter()
            .map(|d| match d.envelope.msg {
                Message::Ping { probe } => probe,
                _ => unreachable!(),
            })
            .collect();
        (0..1000).filter(|p| !got.contains(p)).collect()
    }

    #[test]
    fn asymmetric_block_drops_one_direction_only() {
        let mut n = net(1, NetConfig::default());
        n.block(1, 2);
        n.send(Time::ZERO, 1, addr(2), env(1));
        n.send(Time::ZERO, 2, addr(1), env(2));
        let d: Vec<_> = n.take_deliveries().collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].to, 1);
        assert!(!n.is_clean(Time::ZERO, 1, 2));
        assert!(n.is_clean(Time::ZERO, 2, 1));
        n.heal();
        assert!(n.is_clean(Time::ZERO, 1, 2));
    }

    #[test]
    fn isolation_cuts_both_ways() {
        let mut n = net(1, NetConfig::default());
        n.isolate(3, &[1, 2]);
        n.send(Time::ZERO, 1, addr(3), env(1));
        n.send(Time::ZERO, 3, addr(2), env(2));
        n.send(Time::ZERO, 1, addr(2), env(3));
        assert_eq!(n.take_deliveries().count(), 1);
        assert_eq!(n.stats().partitioned, 2);
    }

    #[test]
    fn clogged_messages_arrive_after_the_clog() {
        let mut n = net(1, NetConfig::default());
        n.clog_host(2, Time::from_secs(3));
        n.send(Time::from_secs(1), 1, addr(2), env(1));
        let d: Vec<_> = n.take_deliveries().collect();
        assert!(d[0].at > Time::from_secs(3));
        assert!(!n.is_clean(Time::from_secs(2), 1, 2));
        assert!(n.is_clean(Time::from_secs(4), 1, 2));
    }

    #[test]
    fn unknown_and_moved_addresses_are_unroutable() {
        let mut n = net(1, NetConfig::default());
        n.detach(addr(2));
        n.send(Time::ZERO, 1, addr(2), env(1));
        assert_eq!(n.take_deliveries().count(), 0);
        assert_eq!(n.stats().unroutable, 1);
    }

    #[test]
    fn latency_has_a_floor_and_a_tail() {
        let mut n = net(2, NetConfig::default());
        let d = run(&mut n, 5000);
        let lat: Vec<u64> = d
            .iter()
            .enumerate()
            .map(|(i, d)| d.at.as_micros() - Time::from_millis(i as u64).as_micros())
            .collect();
        let min = *lat.iter().min().unwrap();
        let max = *lat.iter().max().unwrap();
        assert!(min >= 100, "min {min}");
        assert!(max > 1000, "max {max}");
    }

    #[test]
    fn endpoint_is_a_transport() {
        let mut n = net(1, NetConfig::default());
        {
            let mut ep = n.endpoint(Time::ZERO, 1);
            let t: &mut dyn Transport = &mut ep;
            t.send(addr(3), env(5));
        }
        assert_eq!(n.take_deliveries().next().unwrap().to, 3);
    }
}
