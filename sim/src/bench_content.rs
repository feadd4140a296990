//! Content benchmarks, each printed beside a reference measured in the same
//! run on the same machine:
//!
//! - scan-and-diff of a store's listing against the authority's view
//!   (reference: `comm -3` on the same two sorted lists);
//! - feed catch-up: a replica applying every entry of the log through the
//!   wire codec (reference: inserting the same records straight into a map);
//! - placement decisions (reference: computing the rendezvous scores alone).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Instant;
use stretchfs_core::codec;
use stretchfs_core::content::ContentMeta;
use stretchfs_core::feed::{Change, FeedBody, FeedLog, Snapshot};
use stretchfs_core::hash::{ContentHash, HashKind};
use stretchfs_core::io::Outbox;
use stretchfs_core::placement::{rank, Candidate};
use stretchfs_core::replica::Replica;
use stretchfs_core::rng::{mix64, Rng, SeededRng};
use stretchfs_core::store::diff;
use stretchfs_core::{ClusterId, Envelope, LogId, Message, NodeId, Zone, PROTOCOL_VERSION};

fn hashes(n: usize, salt: u64) -> Vec<ContentHash> {
    (0..n as u64)
        .map(|i| {
            ContentHash::compute(
                HashKind::Sha1,
                &mix64(i.wrapping_add(salt << 40)).to_le_bytes(),
            )
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

struct Row {
    what: String,
    ours: f64,
    reference: f64,
    reference_name: &'static str,
    unit: &'static str,
}

pub fn run(quick: bool) {
    let n = if quick { 100_000 } else { 1_000_000 };
    let runs = if quick { 1 } else { 3 };
    println!("content benchmarks, n = {n}, median of {runs} runs");
    let mut rows = Vec::new();
    rows.extend(scan_and_diff(n, runs));
    rows.push(feed_catch_up(n, runs));
    rows.push(placement(n / 5, runs));
    println!(
        "{:<44} {:>12} {:>14} {:>22} {:>8}",
        "benchmark", "ours", "reference", "reference is", "ratio"
    );
    for r in rows {
        println!(
            "{:<44} {:>10.3}{:>2} {:>12.3}{:>2} {:>22} {:>7.2}x",
            r.what,
            r.ours,
            r.unit,
            r.reference,
            r.unit,
            r.reference_name,
            r.ours / r.reference
        );
    }
}

fn scan_and_diff(n: usize, runs: usize) -> Vec<Row> {
    // The store holds n hashes; the authority's view misses 1% of them and
    // lists 1% the store no longer has.
    let local = hashes(n, 1);
    let mut view: Vec<ContentHash> = local[n / 100..].to_vec();
    view.extend(hashes(n / 100, 2));
    view.sort();
    let meta = ContentMeta {
        ext: stretchfs_core::content::Ext::lit("bin"),
        size: 1,
    };
    let mut listing: Vec<(ContentHash, ContentMeta)> = local.iter().map(|h| (*h, meta)).collect();
    // A disk scan returns files in no useful order.
    let mut rng = SeededRng::new(9);
    for i in (1..listing.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        listing.swap(i, j);
    }
    let mut with_build = Vec::new();
    let mut diff_only = Vec::new();
    let mut found = (0, 0);
    for _ in 0..runs {
        let (secs, map) = time(|| listing.iter().cloned().collect::<BTreeMap<_, _>>());
        let (d, result) = time(|| diff(&map, view.iter().copied()));
        found = (result.new.len(), result.missing.len());
        with_build.push(secs + d);
        diff_only.push(d);
    }
    assert_eq!(found, (n / 100, n / 100), "the diff found what differs");
    // Reference: comm -3 over the same two sorted lists as hex text.
    let dir = std::env::temp_dir().join(format!("stretchfs-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let write = |name: &str, list: &mut dyn Iterator<Item = String>| {
        let path = dir.join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("temp file"));
        for line in list {
            writeln!(f, "{line}").expect("write");
        }
        path
    };
    let mut sorted_local: Vec<String> = local.iter().map(|h| h.to_string()).collect();
    sorted_local.sort();
    let mut sorted_view: Vec<String> = view.iter().map(|h| h.to_string()).collect();
    sorted_view.sort();
    let a = write("local", &mut sorted_local.into_iter());
    let b = write("view", &mut sorted_view.into_iter());
    let mut comm = Vec::new();
    for _ in 0..runs {
        let (secs, status) = time(|| {
            std::process::Command::new("comm")
                .arg("-3")
                .arg(&a)
                .arg(&b)
                .env("LC_ALL", "C")
                .stdout(std::process::Stdio::null())
                .status()
        });
        match status {
            Ok(s) if s.success() => comm.push(secs),
            _ => comm.push(f64::NAN),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let reference = median(comm);
    vec![
        Row {
            what: format!("scan-and-diff {n}: index listing + diff"),
            ours: median(with_build),
            reference,
            reference_name: "comm -3 (sorted input)",
            unit: " s",
        },
        Row {
            what: format!("scan-and-diff {n}: diff of sorted sets"),
            ours: median(diff_only),
            reference,
            reference_name: "comm -3 (sorted input)",
            unit: " s",
        },
    ]
}

fn feed_catch_up(n: usize, runs: usize) -> Row {
    let mut log = FeedLog::new(LogId(1), n + 10);
    let meta = ContentMeta {
        ext: stretchfs_core::content::Ext::lit("mp4"),
        size: 1 << 20,
    };
    let all = hashes(n, 3);
    for (i, h) in all.iter().enumerate() {
        log.append(Change::ContentStored {
            hash: *h,
            store: NodeId(1 + (i as u64 % 10)),
            meta,
        });
    }
    let empty = Snapshot::empty(0);
    let addr: std::net::SocketAddr = "10.0.0.1:7000".parse().expect("literal");
    let mut ours = Vec::new();
    for _ in 0..runs {
        let (secs, count) = time(|| {
            let mut replica = Replica::from_snapshot(LogId(1), &empty);
            let mut out = Outbox::new(NodeId(2), addr);
            while replica.seq() < log.head() {
                let body = log.read(replica.seq(), 1_000);
                // Through the wire format, as a real reader gets it.
                let env = Envelope {
                    version: PROTOCOL_VERSION,
                    cluster: ClusterId(1),
                    from: NodeId(1),
                    from_addr: addr,
                    sent_at: stretchfs_core::WallTime::default(),
                    msg: Message::FeedReply {
                        req: 0,
                        log: LogId(1),
                        body,
                    },
                };
                let bytes = codec::encode(&env);
                let Ok(Envelope {
                    msg: Message::FeedReply { req, log: l, body },
                    ..
                }) = codec::decode(&bytes)
                else {
                    panic!("feed reply decodes");
                };
                replica.on_feed_reply(req, l, body, &mut out);
            }
            replica.state().inventory.len()
        });
        assert_eq!(count, n);
        ours.push(secs);
    }
    let mut floor = Vec::new();
    for _ in 0..runs {
        let (secs, len) = time(|| {
            let mut m: BTreeMap<ContentHash, BTreeSet<NodeId>> = BTreeMap::new();
            for (i, h) in all.iter().enumerate() {
                m.entry(*h).or_default().insert(NodeId(1 + (i as u64 % 10)));
            }
            m.len()
        });
        assert_eq!(len, n);
        floor.push(secs);
    }
    let _ = FeedBody::SnapshotRequired { snapshot_seq: 0 };
    Row {
        what: format!("feed catch-up of {n} changes (codec + apply)"),
        ours: median(ours),
        reference: median(floor),
        reference_name: "BTreeMap insert only",
        unit: " s",
    }
}

fn placement(n: usize, runs: usize) -> Row {
    let zones: Vec<Zone> = (0..3).map(|z| Zone::new(format!("z{z}"))).collect();
    let stores: Vec<Candidate<'_>> = (0..100u64)
        .map(|i| Candidate {
            id: NodeId(mix64(i) | 1),
            zone: &zones[i as usize % 3],
            weight: 100,
        })
        .collect();
    let all = hashes(n, 4);
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..runs {
        let (secs, sum) = time(|| {
            all.iter()
                .map(|h| rank(h, &stores, 2)[0].0)
                .fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        ours.push(n as f64 / secs);
        let (secs, sum) = time(|| {
            all.iter()
                .map(|h| {
                    stores
                        .iter()
                        .map(|s| mix64(h.key64() ^ mix64(s.id.0)))
                        .max()
                        .unwrap_or(0)
                })
                .fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        floor.push(n as f64 / secs);
    }
    Row {
        what: "placement decisions/s (100 stores, 3 zones, R=2)".into(),
        ours: median(ours) / 1e3,
        reference: median(floor) / 1e3,
        reference_name: "scores only (k/s)",
        unit: " k",
    }
}
