//! The discrete-event loop: a priority queue keyed by (time, sequence number)
//! over host starts, message deliveries, node wake-ups, faults and oracle
//! checks. Everything that happens is a function of the configuration and
//! its seed.

use crate::clients::{Clients, Op};
use crate::config::{Fault, SimConfig};
use crate::meta_disk::MetaDisk;
use crate::oracle::Oracle;
use crate::report::Report;
use crate::trace::Trace;
use crate::world::{host_addr, World};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Arc;
use stretchfs_core::content::ContentMeta;
use stretchfs_core::feed::Change;
use stretchfs_core::hash::ContentHash;
use stretchfs_core::rng::SeededRng;
use stretchfs_core::{
    ClientRequest, ClientResponse, Duration, Input, Message, Node, NodeId, Notice, Output, Time,
    TransferSource,
};
use stretchfs_transport_sim::{Delivery, HostId, NetConfig};

/// A transfer a node asked for, as it left the node.
struct TransferOrder {
    host: HostId,
    op: u64,
    hash: ContentHash,
    to_addr: SocketAddr,
    source: TransferSource,
    timeout: Duration,
}

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
    ClientTick,
    /// Content bytes reach a store.
    Arrive(Box<Arrival>),
    /// A store's write becomes durable; the sender then hears success.
    Synced(PendingSync),
    /// The outcome of a transfer reaches the node that asked for it.
    TransferResult {
        host: HostId,
        crash_id: u64,
        op: u64,
        ok: bool,
    },
    /// A driver answer (listing, scrub result) for a node.
    NodeInput {
        host: HostId,
        crash_id: u64,
        input: Box<Input>,
    },
    End,
}

/// A write waiting for its fsync, and who to tell when it is durable.
struct PendingSync {
    host: HostId,
    crash_id: u64,
    hash: ContentHash,
    write: u64,
    from: HostId,
    from_crash: u64,
    op: u64,
}

struct Arrival {
    from: HostId,
    from_crash: u64,
    op: u64,
    to: HostId,
    to_addr: SocketAddr,
    hash: ContentHash,
    meta: ContentMeta,
    bytes: Arc<Vec<u8>>,
}

/// A transfer not answered by then failed (the sender's HTTP time-out).
/// Write plus fsync of a small file.
const DISK_SYNC: Duration = Duration::from_millis(2);
/// Local disk scans and reads.
const LOCAL_IO: Duration = Duration::from_millis(1);
/// About 125 MB/s per transfer.
const NANOS_PER_BYTE: u64 = 8;
/// Client ids for admin requests the simulator itself makes.
const ADMIN_ID: u64 = 1 << 60;
/// A refused removal is asked again this much later.
const REMOVE_RETRY: Duration = Duration::from_secs(2);

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

/// More events than this at one simulated instant is a livelock.
const LIVELOCK_EVENTS: u64 = 1_000_000;

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
    replies: Vec<(HostId, u64, ClientResponse)>,
    transfers: Vec<TransferOrder>,
    open_transfers: BTreeSet<(HostId, u64)>,
    clients: Clients,
    admin_ids: u64,
    /// Removal requests in flight: admin request id -> host.
    removals: BTreeMap<u64, HostId>,
    /// Nodes the authority's log removed in the current step.
    removed_nodes: Vec<NodeId>,
    /// Drain requests in flight: admin request id -> (host, draining).
    drains: BTreeMap<u64, (HostId, bool)>,
    counts: Counts,
    /// Events handled at the current instant (livelock guard).
    same_instant: u64,
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
        if cfg.workload.start < cfg.workload.stop && cfg.workload.start < cfg.end() {
            queue.push(cfg.workload.start, Event::ClientTick);
        }
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
            clients: Clients::new(cfg.seed, cfg.workload.clone()),
            world: World::new(cfg),
            queue,
            trace: Trace::new(print_trace),
            notices: Vec::new(),
            replies: Vec::new(),
            transfers: Vec::new(),
            open_transfers: BTreeSet::new(),
            admin_ids: 0,
            removals: BTreeMap::new(),
            removed_nodes: Vec::new(),
            drains: BTreeMap::new(),
            same_instant: 0,
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

    pub fn clients(&self) -> &Clients {
        &self.clients
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
            if at == self.world.now {
                self.same_instant += 1;
                if self.same_instant > LIVELOCK_EVENTS {
                    self.oracle.violate(
                        at,
                        crate::oracle::ViolationKind::Livelock,
                        format!("{LIVELOCK_EVENTS} events at one instant"),
                    );
                    return false;
                }
            } else {
                self.same_instant = 0;
            }
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
        self.oracle.check_content_final(&self.world, &self.clients);
        let window = self.oracle.latest_refusal;
        self.oracle.measured.refusal_windows.push(window);
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
            clients: self.clients.stats.clone(),
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
            Event::ClientTick => self.client_tick(),
            Event::Arrive(a) => self.arrive(*a),
            Event::Synced(p) => self.synced(p),
            Event::TransferResult {
                host,
                crash_id,
                op,
                ok,
            } => {
                if self.world.hosts[host].crash_id == crash_id
                    && self.open_transfers.remove(&(host, op))
                {
                    self.input(host, Input::TransferDone { op, ok });
                }
            }
            Event::NodeInput {
                host,
                crash_id,
                input,
            } => {
                if self.world.hosts[host].crash_id == crash_id {
                    self.input(host, *input);
                }
            }
            Event::End => return false,
        }
        true
    }

    fn start(&mut self, h: HostId, new_addr: bool) {
        let now = self.world.now;
        let seed = self.world.cfg.seed ^ self.noise;
        let authority_addr = self.world.authority_addr;
        let host = &mut self.world.hosts[h];
        if host.node.is_some() || host.lost {
            return;
        }
        if new_addr && h != 0 {
            host.moves += 1;
        }
        host.addr = host_addr(h, host.moves);
        let cfg = self.world.cfg.node_config(h, host.addr, authority_addr);
        let rng = SeededRng::stream(seed, &format!("node-{h}-{}", host.starts));
        if host.disk.has_snapshot() {
            self.oracle.measured.snapshot_starts += 1;
        }
        if h == 0 {
            self.oracle.authority_started = Some(now);
        }
        let node = match Node::new(cfg, &host.disk.load(), Box::new(rng), host.clock.local(now)) {
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
        if h == 0 {
            self.oracle.audit.forget();
        }
        let host = &mut self.world.hosts[h];
        host.wake = None;
        host.deferred.clear();
        host.content.crash();
        host.spool.clear();
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
        for input in deferred {
            self.step(h, input);
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
            Fault::BitRot { host, nth, at } => {
                let disk = &mut self.world.hosts[host].content;
                let n = disk.synced_count();
                if n > 0 {
                    if let Some(hash) = disk.rot(nth % n, at) {
                        self.trace
                            .line(format_args!("[{now}] host {host}: {hash} rotted"));
                        *self.oracle.destroyed.entry(hash).or_default() += 1;
                    }
                }
            }
            Fault::LoseStore { host } => {
                for (hash, _) in self.world.hosts[host].content.listing() {
                    *self.oracle.destroyed.entry(hash).or_default() += 1;
                }
                self.wipe(host);
                self.world.hosts[host].lost = true;
            }
            Fault::WipeAuthority => {
                self.wipe(0);
                self.oracle.audit.reset();
                self.world.appended_at.clear();
                self.oracle.wipes.push(now);
            }
            Fault::WipeNode { host } => self.wipe(host),
            Fault::Drain { host } => {
                self.oracle.drained.insert(host);
                self.drain_store(host, true)
            }
            // Drained counts from the request (the prisms may stop placing
            // on it at once), undrained from the acknowledgement.
            Fault::Undrain { host } => self.drain_store(host, false),
            Fault::Remove { host } => self.remove_host(host),
            Fault::Leave { host } => {
                if self.world.hosts[host].is_up() {
                    // Told to stop: from now on it is rightly down.
                    self.world.hosts[host].last_impaired = now;
                    self.step(host, Input::Leave);
                }
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

    /// The host crashes and loses its disks; its old identity is retired.
    fn wipe(&mut self, h: HostId) {
        self.crash(h);
        let host = &mut self.world.hosts[h];
        if let Some(old) = host.disk.node() {
            self.oracle.retired.insert(old);
        }
        host.disk = MetaDisk::default();
        host.content = Default::default();
    }

    /// The operator asks a prism to remove `host`'s node (stopped by an
    /// earlier fault); a refusal is asked again later, until the final heal
    /// starts the host again (see `on_admin_reply`).
    fn remove_host(&mut self, host: HostId) {
        let now = self.world.now;
        let h = &self.world.hosts[host];
        let Some(node) = h.disk.node() else {
            return;
        };
        if h.lost || now >= self.world.cfg.heal_at {
            return;
        }
        let prism = (0..self.world.hosts.len())
            .find(|p| self.world.cfg.hosts[*p].roles.prism && self.world.hosts[*p].is_up());
        match prism {
            Some(prism) => {
                self.admin_ids += 1;
                let id = ADMIN_ID | self.admin_ids;
                self.removals.insert(id, host);
                let request = ClientRequest::RemoveNode { node };
                self.step(prism, Input::Client { id, request });
            }
            None => self
                .queue
                .push(now + REMOVE_RETRY, Event::Fault(Fault::Remove { host })),
        }
    }

    /// The answer to a removal: a refusal is asked again a little later;
    /// an acknowledgement removes the host (if the authority's log has not
    /// already: the operator acts on the answer).
    fn on_admin_reply(&mut self, id: u64, response: &ClientResponse) {
        let now = self.world.now;
        if let Some((host, draining)) = self.drains.remove(&id) {
            // An operator asks again until the drain (or undrain) is taken.
            if *response != ClientResponse::Draining {
                self.retry_drain(host, draining);
            } else if !draining {
                self.oracle.drained.remove(&host);
            }
            return;
        }
        let Some(host) = self.removals.remove(&id) else {
            return;
        };
        if *response != ClientResponse::NodeRemoved {
            self.oracle.measured.removals_refused += 1;
            let retry = Event::Fault(Fault::Remove { host });
            return self.queue.push(now + REMOVE_RETRY, retry);
        }
        if let Some(node) = self.world.hosts[host].disk.node() {
            self.host_removed(host, node);
        }
    }

    /// `node` was removed, as the authority's log says (whether or not its
    /// answer reaches the operator).
    fn node_removed(&mut self, node: NodeId) {
        let host =
            (0..self.world.hosts.len()).find(|h| self.world.hosts[*h].disk.node() == Some(node));
        if let Some(host) = host {
            self.host_removed(host, node);
        }
    }

    /// Once removed, the host is gone for good with its disks (the oracle
    /// first checks that no content lost its last copy with them).
    fn host_removed(&mut self, host: HostId, node: NodeId) {
        let now = self.world.now;
        if self.world.hosts[host].lost {
            return; // Seen already (in the log, or a duplicate answer).
        }
        self.trace
            .line(format_args!("[{now}] host {host}: node {node} removed"));
        self.oracle
            .on_removed(&self.world, &self.clients, host, node);
        if self.world.hosts[host].node.is_some() {
            self.crash(host);
        }
        let h = &mut self.world.hosts[host];
        h.lost = true;
        h.disk = MetaDisk::default();
        h.content = Default::default();
    }

    /// An admin asks a prism to drain `host` (or to stop draining it).
    fn drain_store(&mut self, host: HostId, draining: bool) {
        let node = self.world.hosts[host]
            .node
            .as_ref()
            .map(|n| n.id())
            .or(self.world.hosts[host].disk.node());
        let prism = (0..self.world.hosts.len())
            .find(|p| self.world.cfg.hosts[*p].roles.prism && self.world.hosts[*p].is_up());
        match (node, prism) {
            (Some(node), Some(prism)) => {
                self.admin_ids += 1;
                let id = ADMIN_ID | self.admin_ids;
                self.drains.insert(id, (host, draining));
                let request = ClientRequest::Drain { node, draining };
                self.step(prism, Input::Client { id, request });
            }
            (Some(_), None) => self.retry_drain(host, draining),
            (None, _) => {}
        }
    }

    /// Asks again for a drain (or undrain) a little later, until the heal.
    fn retry_drain(&mut self, host: HostId, draining: bool) {
        let at = self.world.now + REMOVE_RETRY;
        if at >= self.world.cfg.heal_at {
            return;
        }
        let fault = if draining {
            Fault::Drain { host }
        } else {
            Fault::Undrain { host }
        };
        self.queue.push(at, Event::Fault(fault));
    }

    fn client_tick(&mut self) {
        let now = self.world.now;
        if now >= self.clients.cfg.stop {
            return;
        }
        let prisms: Vec<HostId> = (0..self.world.hosts.len())
            .filter(|h| self.world.cfg.hosts[*h].roles.prism && self.world.hosts[*h].is_up())
            .collect();
        if let Some(issued) = self.clients.next_request(now, &prisms) {
            if let Some((hash, meta, bytes)) = issued.spool {
                self.world.hosts[issued.host]
                    .spool
                    .insert(hash, (bytes, meta));
            }
            let input = Input::Client {
                id: issued.id,
                request: issued.request,
            };
            self.step(issued.host, input);
        }
        let next = now + self.clients.cfg.interval;
        self.queue.push(next, Event::ClientTick);
    }

    /// A node asked for content to be copied to a store (a prism placing an
    /// upload, a store running a clone job).
    fn start_transfer(&mut self, t: TransferOrder) {
        let TransferOrder {
            host: h,
            op,
            hash,
            to_addr,
            source,
            timeout,
        } = t;
        let now = self.world.now;
        let src = &self.world.hosts[h];
        let from_crash = src.crash_id;
        let data = match source {
            TransferSource::Spool => src.spool.get(&hash).cloned(),
            TransferSource::Stored => src.content.read(&hash).map(|c| (c.bytes.clone(), c.meta)),
        };
        self.open_transfers.insert((h, op));
        let failed = Event::TransferResult {
            host: h,
            crash_id: from_crash,
            op,
            ok: false,
        };
        let Some((bytes, meta)) = data else {
            self.queue.push(now + LOCAL_IO, failed);
            return;
        };
        // The time-out answers unless the target's answer comes first.
        self.queue.push(now + timeout, failed);
        let Some(to) = self.world.net.host_of(to_addr) else {
            return; // Nobody there: the time-out answers.
        };
        if !self.world.clean(h, to) {
            return;
        }
        let wire = Duration::from_nanos(bytes.len() as u64 * NANOS_PER_BYTE);
        let at = now + self.world.net.sample_latency() * 2 + wire;
        let arrival = Arrival {
            from: h,
            from_crash,
            op,
            to,
            to_addr,
            hash,
            meta,
            bytes,
        };
        self.queue.push(at, Event::Arrive(Box::new(arrival)));
    }

    /// Bytes reach the target store: verify, write, sync later.
    fn arrive(&mut self, a: Arrival) {
        let now = self.world.now;
        let back = now + self.world.net.sample_latency();
        let t = &mut self.world.hosts[a.to];
        if t.node.is_none() || t.addr != a.to_addr || t.paused {
            return; // The sender's time-out answers.
        }
        let answer = |ok| Event::TransferResult {
            host: a.from,
            crash_id: a.from_crash,
            op: a.op,
            ok,
        };
        if ContentHash::compute(a.hash.kind(), &a.bytes) != a.hash {
            self.queue.push(back, answer(false)); // 422: hash mismatch.
            return;
        }
        if t.content.has_synced(&a.hash) {
            // Already here: success, and the store hears of it again (it
            // may have missed it), which is harmless if it had not.
            let meta = a.meta;
            self.queue.push(back, answer(true));
            self.input(a.to, Input::ContentStored { hash: a.hash, meta });
            return;
        }
        let write = t.content.write(a.hash, a.meta, a.bytes);
        let synced = Event::Synced(PendingSync {
            host: a.to,
            crash_id: t.crash_id,
            hash: a.hash,
            write,
            from: a.from,
            from_crash: a.from_crash,
            op: a.op,
        });
        self.queue.push(now + DISK_SYNC, synced);
    }

    fn synced(&mut self, p: PendingSync) {
        let PendingSync {
            host,
            crash_id,
            hash,
            write,
            from,
            from_crash,
            op,
        } = p;
        let now = self.world.now;
        let t = &mut self.world.hosts[host];
        if t.crash_id != crash_id {
            return; // Crashed before the sync: the write is lost.
        }
        let Some(meta) = t.content.sync(&hash, write, now) else {
            return;
        };
        // Only a verified, durable copy is acknowledged.
        let back = now + self.world.net.sample_latency();
        let ok = Event::TransferResult {
            host: from,
            crash_id: from_crash,
            op,
            ok: true,
        };
        self.queue.push(back, ok);
        self.input(host, Input::ContentStored { hash, meta });
    }

    /// A driver input for a node: handled now, or at resume if paused.
    fn input(&mut self, host: HostId, input: Input) {
        let h = &mut self.world.hosts[host];
        if h.node.is_none() {
            return;
        }
        if h.paused {
            h.deferred.push(input);
        } else {
            self.step(host, input);
        }
    }

    fn on_reply(&mut self, h: HostId, id: u64, response: ClientResponse) {
        let Some(pending) = self.clients.take_pending(h, id) else {
            // An admin request, or a client that gave up.
            return self.on_admin_reply(id, &response);
        };
        if let Op::Upload { hash } = &pending.op {
            self.world.hosts[h].spool.remove(hash);
        }
        let rotten =
            self.oracle
                .on_client_reply(&self.world, &mut self.clients, h, pending, &response);
        if let Some((store, hash)) = rotten {
            let input = Box::new(Input::ScrubResult { hash, ok: false });
            let ev = Event::NodeInput {
                host: store,
                crash_id: self.world.hosts[store].crash_id,
                input,
            };
            self.queue.push(self.world.now + LOCAL_IO, ev);
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let host = &mut self.world.hosts[d.to];
        if host.node.is_none() || host.addr != d.to_addr {
            return; // Nobody listens there any more.
        }
        if host.paused {
            host.deferred.push(Input::Message(d.envelope));
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
            Input::Client { id, .. } => self.trace.record(&(now, h, 3u8, id)),
            Input::TransferDone { op, ok } => self.trace.record(&(now, h, 4u8, op, ok)),
            Input::ContentListing(items) => self.trace.record(&(now, h, 5u8, items.len())),
            Input::ContentStored { hash, .. } => self.trace.record(&(now, h, 6u8, hash)),
            Input::ScrubResult { hash, ok } => self.trace.record(&(now, h, 8u8, hash, ok)),
            Input::Leave => self.trace.record(&(now, h, 9u8)),
        }
        if h == 0 {
            self.audit_votes(&input);
        }
        let host = &mut self.world.hosts[h];
        let Some(node) = host.node.as_mut() else {
            return;
        };
        node.handle(host.clock.local(now), host.clock.wall(now), input);
        self.drain(h);
        if h == 0 {
            self.oracle.audit_step(&self.world);
        }
    }

    /// The verdict audit hears every vote set the authority is handed, as
    /// it is handed it (the authority's own arrive as notices).
    fn audit_votes(&mut self, input: &Input) {
        let Input::Message(env) = input else {
            return;
        };
        let Message::Votes { seq, down } = &env.msg else {
            return;
        };
        let Some(authority) = self.world.authority() else {
            return;
        };
        if authority.state().registry.contains(env.from) {
            let local = self.world.hosts[0].clock.local(self.world.now);
            self.oracle.audit.on_votes(local, env.from, *seq, down);
        }
    }

    /// Performs a node's outputs: sends go to the network, records to its
    /// disk, notices to the oracles; then re-arms its wake-up.
    fn drain(&mut self, h: HostId) {
        let World {
            hosts,
            net,
            now,
            appended_at,
            ..
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
                Output::Persist(record) => {
                    if let stretchfs_core::Record::Appended(e) = &record {
                        appended_at.insert(e.seq, now);
                        if h == 0 {
                            self.oracle.audit.on_appended(e);
                            if let Change::NodeRemoved(id) = e.change {
                                self.removed_nodes.push(id);
                            }
                        }
                    }
                    host.disk.apply(&record)
                }
                Output::Notice(n) => self.notices.push((h, n)),
                Output::Reply { id, response } => self.replies.push((h, id, response)),
                Output::Transfer {
                    op,
                    hash,
                    to_addr,
                    source,
                    timeout,
                    ..
                } => self.transfers.push(TransferOrder {
                    host: h,
                    op,
                    hash,
                    to_addr,
                    source,
                    timeout,
                }),
                Output::ListContent => {
                    let input = Box::new(Input::ContentListing(host.content.listing()));
                    let ev = Event::NodeInput {
                        host: h,
                        crash_id: host.crash_id,
                        input,
                    };
                    self.queue.push(now + LOCAL_IO, ev);
                }
                Output::Scrub { hash } => {
                    let ok = host.content.intact(&hash);
                    let input = Box::new(Input::ScrubResult { hash, ok });
                    let ev = Event::NodeInput {
                        host: h,
                        crash_id: host.crash_id,
                        input,
                    };
                    self.queue.push(now + LOCAL_IO, ev);
                }
                Output::DeleteContent { hash } => host.content.delete(&hash),
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
        let mut transfers = std::mem::take(&mut self.transfers);
        for t in transfers.drain(..) {
            self.start_transfer(t);
        }
        self.transfers = transfers;
        for node in std::mem::take(&mut self.removed_nodes) {
            self.node_removed(node);
        }
        let mut replies = std::mem::take(&mut self.replies);
        for (h, id, response) in replies.drain(..) {
            if self.trace.printing() {
                self.trace.line(format_args!(
                    "[{now}] host {h} replies to client {id}: {response:?}"
                ));
            }
            self.on_reply(h, id, response);
        }
        self.replies = replies;
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
