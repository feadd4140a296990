//! The discrete-event loop: a priority queue keyed by (time, sequence number)
//! over host starts, message deliveries, node wake-ups, faults and oracle
//! checks. Everything that happens is a function of the configuration and
//! its seed.

use crate::config::{Fault, SimConfig};
use crate::oracle::Oracle;
use crate::report::Report;
use crate::trace::Trace;
use crate::world::{host_addr, World};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;
use stretchfs_core::rng::SeededRng;
use stretchfs_core::{Duration, Input, Node, Notice, Output, Time};
use stretchfs_transport_sim::{Delivery, HostId, NetConfig};

enum Event {
    Start(HostId),
    Deliver(Delivery),
    Wake(HostId),
    Fault(Fault),
    DetectionCheck {
        host: HostId,
        crash_id: u64,
        crashed_at: Time,
    },
    Converge,
    KeptDownCheck,
    NetMark(Vec<HostId>),
    End,
}

/// Events live in a slab; the heap orders small keys only.
#[derive(Default)]
struct EventQueue {
    heap: BinaryHeap<Reverse<(Time, u64, u32)>>,
    slots: Vec<Option<Event>>,
    free: Vec<u32>,
    seq: u64,
}

impl EventQueue {
    fn push(&mut self, at: Time, event: Event) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(event);
                s
            }
            None => {
                self.slots.push(Some(event));
                (self.slots.len() - 1) as u32
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, slot)));
    }

    fn pop(&mut self) -> Option<(Time, Event)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        let event = self.slots[slot as usize].take().expect("scheduled slot");
        self.free.push(slot);
        Some((at, event))
    }

    fn peek_time(&self) -> Option<Time> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }
}

const CONVERGE_EVERY: Duration = Duration::from_millis(250);
const KEPT_DOWN_EVERY: Duration = Duration::from_secs(1);

/// Counters for reports and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Inputs handled by nodes.
    pub events: u64,
    pub messages: u64,
    pub probe_messages: u64,
}

pub struct Sim {
    world: World,
    oracle: Oracle,
    queue: EventQueue,
    trace: Trace,
    notices: Vec<(HostId, Notice)>,
    counts: Counts,
    noise: u64,
    started: std::time::Instant,
}

impl Sim {
    pub fn new(cfg: SimConfig, print_trace: bool) -> Sim {
        let mut queue = EventQueue::default();
        for (i, h) in cfg.hosts.iter().enumerate() {
            queue.push(h.start_at, Event::Start(i));
        }
        for (at, f) in &cfg.faults {
            queue.push(*at, Event::Fault(f.clone()));
        }
        queue.push(cfg.heal_at, Event::Fault(Fault::HealAll));
        queue.push(cfg.heal_at, Event::Converge);
        queue.push(Time::ZERO + KEPT_DOWN_EVERY, Event::KeptDownCheck);
        queue.push(cfg.end(), Event::End);
        let noise = if cfg.inject_nondeterminism {
            // Deliberately not reproducible: only for the oracle self-test.
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        } else {
            0
        };
        Sim {
            oracle: Oracle::new(&cfg),
            world: World::new(cfg),
            queue,
            trace: Trace::new(print_trace),
            notices: Vec::new(),
            counts: Counts::default(),
            noise,
            started: std::time::Instant::now(),
        }
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// Adds a fault to the schedule of a run in progress (tests pick hosts
    /// from what the cluster looks like mid-run).
    pub fn schedule(&mut self, at: Time, fault: Fault) {
        self.queue.push(at.max(self.world.now), Event::Fault(fault));
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn now(&self) -> Time {
        self.world.now
    }

    /// Runs every event up to and including `until`; false once the run ended.
    pub fn run_until(&mut self, until: Time) -> bool {
        while self.queue.peek_time().is_some_and(|t| t <= until) {
            let Some((at, event)) = self.queue.pop() else {
                break;
            };
            self.world.now = at;
            if !self.dispatch(event) {
                return false;
            }
        }
        self.world.now = self.world.now.max(until);
        true
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Report {
        self.run_until(Time::MAX);
        self.finish()
    }

    pub fn finish(mut self) -> Report {
        self.oracle.finish(&self.world);
        let cfg = &self.world.cfg;
        let dropped_foreign = self
            .world
            .hosts
            .iter()
            .filter_map(|h| h.node.as_ref())
            .map(|n| n.counters().foreign_cluster)
            .sum();
        Report {
            seed: cfg.seed,
            description: cfg.describe(),
            trace_hash: self.trace.hash(),
            events: self.counts.events,
            sim_time: self.world.now.since(Time::ZERO),
            wall_time: self.started.elapsed(),
            loss: cfg.net.drop,
            measured: self.oracle.measured.clone(),
            convergence: self.oracle.convergence_time(),
            violations: self.oracle.violations.clone(),
            messages: self.counts.messages,
            probe_messages: self.counts.probe_messages,
            dropped_foreign,
            verdicts: std::mem::take(&mut self.oracle.verdicts),
            votes: std::mem::take(&mut self.oracle.votes),
        }
    }

    fn dispatch(&mut self, event: Event) -> bool {
        let now = self.world.now;
        match event {
            Event::Start(h) => self.start(h, false),
            Event::Deliver(d) => self.deliver(d),
            Event::Wake(h) => {
                let host = &mut self.world.hosts[h];
                if host.wake == Some(now) {
                    host.wake = None;
                    if host.is_up() {
                        self.step(h, Input::Tick);
                    }
                }
            }
            Event::Fault(f) => self.apply(f),
            Event::DetectionCheck {
                host,
                crash_id,
                crashed_at,
            } => self
                .oracle
                .check_detection(&self.world, host, crash_id, crashed_at),
            Event::Converge => {
                self.oracle.check_convergence(&self.world);
                if now + CONVERGE_EVERY < self.world.cfg.end() {
                    self.queue.push(now + CONVERGE_EVERY, Event::Converge);
                }
            }
            Event::KeptDownCheck => {
                self.oracle.check_kept_down(&self.world);
                if now + KEPT_DOWN_EVERY < self.world.cfg.end() {
                    self.queue.push(now + KEPT_DOWN_EVERY, Event::KeptDownCheck);
                }
            }
            Event::NetMark(hosts) => self.world.mark_net_changed(hosts),
            Event::End => return false,
        }
        true
    }

    fn start(&mut self, h: HostId, new_addr: bool) {
        let now = self.world.now;
        let seed = self.world.cfg.seed ^ self.noise;
        let authority_addr = self.world.authority_addr;
        let host = &mut self.world.hosts[h];
        if host.node.is_some() {
            return;
        }
        if new_addr && h != 0 {
            host.moves += 1;
        }
        host.addr = host_addr(h, host.moves);
        let cfg = self.world.cfg.node_config(h, host.addr, authority_addr);
        let rng = SeededRng::stream(seed, &format!("node-{h}-{}", host.starts));
        let node = match Node::new(cfg, &host.disk, Box::new(rng), host.clock.local(now)) {
            Ok(n) => n,
            Err(e) => panic!("simulated host {h} has an invalid config: {e}"),
        };
        self.trace.line(format_args!(
            "[{now}] host {h} starts as {} at {} (start {})",
            node.id(),
            host.addr,
            host.starts + 1
        ));
        self.trace.record(&(now, h, "start", host.addr));
        self.world.node_hosts.insert(node.id(), h);
        host.node = Some(node);
        host.starts += 1;
        host.first_started.get_or_insert(now);
        host.last_impaired = now;
        host.paused = false;
        let addr = host.addr;
        self.world.net.attach(addr, h);
        self.oracle.on_restart(h);
        self.drain(h);
    }

    fn crash(&mut self, h: HostId) {
        let now = self.world.now;
        let host = &mut self.world.hosts[h];
        let Some(node) = host.node.take() else {
            return;
        };
        host.crash_id += 1;
        host.wake = None;
        host.deferred.clear();
        host.paused = false;
        host.last_impaired = now;
        let (addr, crash_id) = (host.addr, host.crash_id);
        self.world.net.detach(addr);
        self.trace
            .line(format_args!("[{now}] host {h} crashes ({})", node.id()));
        self.trace.record(&(now, h, "crash"));
        let check_at = self.oracle.on_crash(&self.world, h, node.id());
        self.queue.push(
            check_at,
            Event::DetectionCheck {
                host: h,
                crash_id,
                crashed_at: now,
            },
        );
    }

    fn resume(&mut self, h: HostId) {
        let now = self.world.now;
        let host = &mut self.world.hosts[h];
        if !host.paused {
            return;
        }
        host.paused = false;
        host.last_impaired = now;
        let deferred = std::mem::take(&mut host.deferred);
        self.trace.line(format_args!(
            "[{now}] host {h} resumes ({} messages waited)",
            deferred.len()
        ));
        for env in deferred {
            self.step(h, Input::Message(env));
        }
        self.step(h, Input::Tick);
    }

    fn apply(&mut self, fault: Fault) {
        let now = self.world.now;
        self.trace.line(format_args!("[{now}] fault {fault:?}"));
        self.trace.record(&(now, format!("{fault:?}")));
        let n = self.world.hosts.len();
        match fault {
            Fault::Crash { host } => self.crash(host),
            Fault::Restart { host, new_addr } => self.start(host, new_addr),
            Fault::Pause { host } => {
                let h = &mut self.world.hosts[host];
                if h.is_up() {
                    h.paused = true;
                    h.last_impaired = now;
                }
            }
            Fault::Resume { host } => self.resume(host),
            Fault::Split { a, b } => {
                self.world.net.partition(&a, &b);
                self.world.mark_all_net_changed();
            }
            Fault::OneWay { from, to } => {
                self.world.net.block(from, to);
                self.world.mark_net_changed([from, to]);
            }
            Fault::Isolate { host } => {
                let others: Vec<HostId> = (0..n).filter(|o| *o != host).collect();
                self.world.net.isolate(host, &others);
                self.world.mark_all_net_changed();
            }
            Fault::ClogHost { host, duration } => {
                self.world.net.clog_host(host, now + duration);
                self.world.mark_all_net_changed();
                self.queue
                    .push(now + duration, Event::NetMark((0..n).collect()));
            }
            Fault::ClogLink { from, to, duration } => {
                self.world.net.clog_link(from, to, now + duration);
                self.world.mark_net_changed([from, to]);
                self.queue
                    .push(now + duration, Event::NetMark(vec![from, to]));
            }
            Fault::HealNetwork => {
                self.world.net.heal();
                self.world.mark_all_net_changed();
            }
            Fault::SetNet(cfg) => {
                self.world.net.set_config(cfg);
                self.world.mark_all_net_changed();
            }
            Fault::HealAll => {
                self.world.net.heal();
                let calm = NetConfig {
                    drop: 0.0,
                    duplicate: 0.0,
                    reorder: 0.0,
                    ..self.world.net.config().clone()
                };
                self.world.net.set_config(calm);
                self.world.mark_all_net_changed();
                for h in 0..n {
                    self.resume(h);
                    self.start(h, false);
                }
            }
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let host = &mut self.world.hosts[d.to];
        if host.node.is_none() || host.addr != d.to_addr {
            return; // Nobody listens there any more.
        }
        if host.paused {
            host.deferred.push(d.envelope);
            return;
        }
        self.step(d.to, Input::Message(d.envelope));
    }

    fn step(&mut self, h: HostId, input: Input) {
        let now = self.world.now;
        self.counts.events += 1;
        match &input {
            Input::Message(env) => {
                self.trace.record(&(now, h, 0u8, env));
                if self.trace.printing() {
                    self.trace.line(format_args!(
                        "[{now}] host {h} <- {} {:?}",
                        env.from, env.msg
                    ));
                }
            }
            Input::Tick => self.trace.record(&(now, h, 1u8)),
            Input::ContactFailed(id) => self.trace.record(&(now, h, 2u8, id)),
        }
        let host = &mut self.world.hosts[h];
        let Some(node) = host.node.as_mut() else {
            return;
        };
        node.handle(host.clock.local(now), input);
        self.drain(h);
    }

    /// Performs a node's outputs: sends go to the network, records to its
    /// disk, notices to the oracles; then re-arms its wake-up.
    fn drain(&mut self, h: HostId) {
        let World {
            hosts, net, now, ..
        } = &mut self.world;
        let now = *now;
        let host = &mut hosts[h];
        let Some(node) = host.node.as_mut() else {
            return;
        };
        while let Some(out) = node.poll_output() {
            match out {
                Output::Send { to, envelope } => {
                    self.counts.messages += 1;
                    if envelope.msg.is_probe() {
                        self.counts.probe_messages += 1;
                    }
                    net.send(now, h, to, envelope);
                }
                Output::Persist(record) => host.disk.apply(&record),
                Output::Notice(n) => self.notices.push((h, n)),
            }
        }
        if let Some(local) = node.poll_timeout() {
            let at = host.clock.global_at(local).max(now);
            if host.wake.is_none_or(|w| at < w) {
                host.wake = Some(at);
                self.queue.push(at, Event::Wake(h));
            }
        }
        for d in net.take_deliveries() {
            self.queue.push(d.at, Event::Deliver(d));
        }
        let mut notices = std::mem::take(&mut self.notices);
        for (h, n) in notices.drain(..) {
            if self.trace.printing() && !matches!(n, Notice::Suspicion { .. }) {
                self.trace
                    .line(format_args!("[{now}] host {h} notice {n:?}"));
            }
            self.oracle.on_notice(&self.world, h, &n);
        }
        self.notices = notices;
    }
}

/// Runs one configuration to the end.
pub fn run(cfg: SimConfig, print_trace: bool) -> Report {
    Sim::new(cfg, print_trace).run()
}

/// Hashable view of a fault for the trace (faults hold floats in `SetNet`).
impl Hash for Fault {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        format!("{self:?}").hash(state);
    }
}
