//! Simulator benchmark: simulated seconds per wall-clock second, events per
//! second, and probe messages per node per simulated second, for a 10-node and
//! a 1,000-node cluster. The reference, measured in the same run, is a bare
//! event loop (the same number of pushes and pops on a binary heap with no
//! work per event): the ceiling any discrete-event simulator on this machine
//! could reach.

use crate::config::SimConfig;
use crate::engine::Sim;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;
use stretchfs_core::{Duration, Time};

pub struct Row {
    pub nodes: usize,
    pub sim_secs: f64,
    pub wall_secs: f64,
    pub events: u64,
    pub probe_per_node_per_sec: f64,
    pub bare_events_per_sec: f64,
}

impl Row {
    pub fn speedup(&self) -> f64 {
        self.sim_secs / self.wall_secs
    }

    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.wall_secs
    }
}

/// A calm cluster of `nodes` measured for `window` after `warmup`.
pub fn measure(nodes: usize, warmup: Duration, window: Duration) -> Row {
    let mut cfg = SimConfig::calm(1, nodes, 3);
    // Everyone joins within the first second; the window starts after that.
    for (i, h) in cfg.hosts.iter_mut().enumerate() {
        h.start_at = Time::from_micros(i as u64 * 1_000_000 / nodes as u64);
    }
    cfg.heal_at = Time::ZERO + warmup + window + Duration::from_secs(1);
    let mut sim = Sim::new(cfg, false);
    let start = Time::ZERO + warmup;
    sim.run_until(start);
    let before = sim.counts();
    let wall = Instant::now();
    sim.run_until(start + window);
    let wall_secs = wall.elapsed().as_secs_f64();
    let after = sim.counts();
    let events = after.events - before.events;
    let sim_secs = window.as_secs_f64();
    Row {
        nodes,
        sim_secs,
        wall_secs,
        events,
        probe_per_node_per_sec: (after.probe_messages - before.probe_messages) as f64
            / nodes as f64
            / sim_secs,
        bare_events_per_sec: bare_loop(events),
    }
}

/// Events per second of an empty discrete-event loop doing `events` pops
/// (each pop schedules one successor, as message deliveries do).
pub fn bare_loop(events: u64) -> f64 {
    let mut heap: BinaryHeap<Reverse<(u64, u64, u32)>> = BinaryHeap::new();
    let mut x = 1u64;
    for i in 0..512u64 {
        heap.push(Reverse((i, i, 0)));
    }
    let started = Instant::now();
    let mut seq = 512;
    let mut checksum = 0u64;
    for _ in 0..events {
        let Some(Reverse((t, _, _))) = heap.pop() else {
            break;
        };
        x = stretchfs_core::rng::mix64(x);
        checksum = checksum.wrapping_add(t);
        seq += 1;
        heap.push(Reverse((t + 1 + (x & 1023), seq, 0)));
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    std::hint::black_box(checksum);
    events as f64 / secs
}

pub fn run(quick: bool) {
    let (small_window, big_window) = if quick {
        (Duration::from_secs(60), Duration::from_secs(3))
    } else {
        (Duration::from_secs(600), Duration::from_secs(20))
    };
    let runs = if quick { 1 } else { 3 };
    println!(
        "simulator benchmark (calm cluster, default settings, 3 zones; median of {runs} runs)"
    );
    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>14} {:>16} {:>12} {:>18}",
        "nodes",
        "sim s",
        "wall s",
        "sim s/wall s",
        "events/s",
        "bare loop ev/s",
        "vs bare",
        "probe msgs/node/s"
    );
    let mut probe = Vec::new();
    for (nodes, warmup, window) in [
        (10, Duration::from_secs(5), small_window),
        (1000, Duration::from_secs(10), big_window),
    ] {
        let mut rows: Vec<Row> = (0..runs).map(|_| measure(nodes, warmup, window)).collect();
        rows.sort_by(|a, b| a.speedup().total_cmp(&b.speedup()));
        let r = &rows[rows.len() / 2];
        println!(
            "{:>6} {:>10.0} {:>10.3} {:>11.0}x {:>14.0} {:>16.0} {:>11.1}% {:>18.2}",
            r.nodes,
            r.sim_secs,
            r.wall_secs,
            r.speedup(),
            r.events_per_sec(),
            r.bare_events_per_sec,
            100.0 * r.events_per_sec() / r.bare_events_per_sec,
            r.probe_per_node_per_sec
        );
        probe.push(r.probe_per_node_per_sec);
    }
    if let [small, big] = probe[..] {
        println!(
            "probe load per node, 1000 vs 10 nodes: {:.3}x (flat is 1.0)",
            big / small
        );
    }
}
