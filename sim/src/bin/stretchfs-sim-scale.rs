//! The scale benchmark in core (no disks, no network): N objects, each with
//! two copies and a live purchase, applied to the cluster state as the
//! authority and every replica apply them, and what that costs: heap bytes
//! per object (counted by this binary's allocator, not estimated), the feed
//! log at its retain bound, a snapshot's bytes and its encode (compaction,
//! serving a reader) and decode (a restart, a fresh prism) times. Each row
//! has a reference measured in the same run: the raw bytes a record must
//! keep, and a plain sorted map of those raw bytes.
//!
//! `cargo run --release -p stretchfs-sim --bin stretchfs-sim-scale -- 10000 100000 1000000`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;
use stretchfs_core::codec;
use stretchfs_core::content::{ContentMeta, Ext};
use stretchfs_core::feed::{Change, FeedLog, Snapshot};
use stretchfs_core::hash::{ContentHash, HashKind};
use stretchfs_core::purchase::{Purchase, Token};
use stretchfs_core::rng::mix64;
use stretchfs_core::snapshot_transfer::encode_snapshot;
use stretchfs_core::state::ClusterState;
use stretchfs_core::time::WallTime;
use stretchfs_core::{LogId, NodeId};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

fn hash(i: u64) -> ContentHash {
    ContentHash::compute(HashKind::Sha1, &mix64(i).to_le_bytes())
}

/// The changes one upload and its purchase put in the feed.
fn changes(i: u64) -> [Change; 3] {
    let h = hash(i);
    let meta = ContentMeta {
        ext: Ext::lit("mp4"),
        size: 1 + i % 1_000_000,
    };
    let a = NodeId(2 + i % 3);
    let b = NodeId(2 + (i + 1) % 3);
    [
        Change::ContentStored {
            hash: h,
            store: a,
            meta,
        },
        Change::ContentStored {
            hash: h,
            store: b,
            meta,
        },
        Change::PurchaseCreated(Purchase {
            token: Token(u128::from(mix64(i ^ 0x70c3)) << 64 | u128::from(i)),
            hash: h,
            ext: Ext::lit("mp4"),
            expires: WallTime::from_micros(1_000_000 * (86_400 + i)),
            referrers: Vec::new(),
        }),
    ]
}

fn secs<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

struct Row {
    n: u64,
    object_bytes: f64,
    purchase_bytes: f64,
    reference_bytes: f64,
    raw_bytes: f64,
    apply_us: f64,
    log_bytes: i64,
    snapshot_bytes: usize,
    encode_s: f64,
    decode_s: f64,
    reference_decode_s: f64,
}

fn measure(n: u64, retain: usize) -> Row {
    let before = live();
    let mut state = ClusterState::default();
    let (apply_s, ()) = secs(|| {
        for i in 0..n {
            let [a, b, _] = changes(i);
            state.apply(&a);
            state.apply(&b);
        }
    });
    let object_bytes = (live() - before) as f64 / n as f64;
    let before = live();
    for i in 0..n {
        let [_, _, p] = changes(i);
        state.apply(&p);
    }
    let purchase_bytes = (live() - before) as f64 / n as f64;

    // The log holds at most `retain` entries, whatever N.
    let before_log = live();
    let mut log = FeedLog::new(LogId(1), retain);
    for i in 0..n {
        for c in changes(i) {
            log.append(c);
        }
    }
    let log_bytes = live() - before_log;
    drop(log);

    let (encode_s, bytes) = secs(|| encode_snapshot(&state, 3 * n));
    let (decode_s, back) = secs(|| {
        let snap: Snapshot = codec::decode_value(&bytes).expect("the snapshot decodes");
        ClusterState::from_snapshot(&snap)
    });
    assert_eq!(
        back.digest(),
        state.digest(),
        "the snapshot restores the state"
    );
    assert_eq!(back.inventory.len() as u64, n);
    assert_eq!(back.purchases.len() as u64, n);
    drop(back);

    // Reference: the raw facts kept per object (digest, size, two holders,
    // token, expiry) in plain sorted maps, built from the same order.
    let before_ref = live();
    let (reference_decode_s, reference) = secs(|| {
        let mut inv: BTreeMap<[u8; 20], (u64, [u64; 2])> = BTreeMap::new();
        let mut buys: BTreeMap<u128, ([u8; 20], u64)> = BTreeMap::new();
        for i in 0..n {
            let mut k = [0u8; 20];
            k.copy_from_slice(hash(i).digest());
            inv.insert(k, (i, [2, 3]));
            buys.insert(u128::from(mix64(i ^ 0x70c3)) << 64 | u128::from(i), (k, i));
        }
        (inv, buys)
    });
    let reference_bytes = (live() - before_ref) as f64 / n as f64;
    drop(reference);
    Row {
        n,
        object_bytes,
        purchase_bytes,
        reference_bytes,
        raw_bytes: (20 + 8 + 16 + 3 + 16 + 8) as f64,
        apply_us: apply_s * 1e6 / (2 * n) as f64,
        log_bytes,
        snapshot_bytes: bytes.len(),
        encode_s,
        decode_s,
        reference_decode_s,
    }
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        sizes
    };
    let retain = 100_000;
    println!(
        "core state with N objects (two copies and one live purchase each), feed.retain = {retain}"
    );
    println!("| objects | heap B per object (inventory) | heap B per purchase | state per object with its purchase | reference: sorted maps of the raw facts | raw facts | apply µs/change | feed log (bounded) | snapshot | encode (compaction, serving) | decode + rebuild (restart, fresh prism) | reference: build the maps |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let r = measure(n, retain);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} ({:.2}x) | {:.0} | {:.2} | {:.1} MB | {:.1} MB ({:.0} B/object) | {:.2} s | {:.2} s | {:.2} s ({:.2}x) |",
            r.n,
            r.object_bytes,
            r.purchase_bytes,
            r.object_bytes + r.purchase_bytes,
            r.reference_bytes,
            (r.object_bytes + r.purchase_bytes) / r.reference_bytes,
            r.raw_bytes,
            r.apply_us,
            r.log_bytes as f64 / 1e6,
            r.snapshot_bytes as f64 / 1e6,
            r.snapshot_bytes as f64 / r.n as f64,
            r.encode_s,
            r.decode_s,
            r.reference_decode_s,
            r.decode_s / r.reference_decode_s,
        );
    }
}
