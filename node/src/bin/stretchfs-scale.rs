//! The scale benchmark: a local cluster of real processes loaded with N small
//! objects (and as many live purchases) through the public API, measured at
//! each size: resident memory per role and per object, the upload rate
//! against the rate at the first size, each role's restart to ready, a fresh
//! prism's time to ready, and the metadata on disk. Prints one table. Run
//! through `bench/scale.sh` (not in CI: 1M objects take about half an hour).
//!
//! Sizes are cumulative (`SCALE_N=10000,100000`): the cluster grows from one
//! row to the next, so the restarts at a row restart a cluster that has been
//! loaded (and compacted) from empty.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stretchfs::local_cluster::ProcCluster;

const IP: &str = "127.0.0.41";
const CONCURRENCY: u64 = 16;

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The content of object `i`: small, unique per run.
fn object(i: u64, salt: u64) -> Vec<u8> {
    format!("scale {salt:016x} {i:012}").into_bytes()
}

/// Uploads objects `from..to` (and purchases each when `purchases`) with
/// `CONCURRENCY` clients; objects per second.
async fn load(
    c: &Arc<ProcCluster>,
    from: u64,
    to: u64,
    salt: u64,
    purchases: bool,
) -> Result<f64, String> {
    let next = Arc::new(AtomicU64::new(from));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let c = c.clone();
        let next = next.clone();
        let prism = if w % 2 == 0 { "prism-1" } else { "prism-2" };
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return Ok::<(), String>(());
                }
                let mut tries = 0;
                let hash = loop {
                    let r = c.upload(prism, object(i, salt), "txt").await;
                    match r {
                        Ok(r) if r.status == 201 || r.status == 200 => {
                            break r.json()?["hash"]
                                .as_str()
                                .ok_or("upload answer without a hash")?
                                .to_string()
                        }
                        Ok(r) if tries < 20 && r.status == 503 => {}
                        Ok(r) => return Err(format!("upload {i}: {} {}", r.status, r.text())),
                        Err(e) if tries < 20 => tracing_free_log(&e),
                        Err(e) => return Err(format!("upload {i}: {e}")),
                    }
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                if purchases {
                    let r = c.purchase(prism, &hash, "txt", "30d").await?;
                    if r.status != 201 && r.status != 200 {
                        return Err(format!("purchase {i}: {} {}", r.status, r.text()));
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok((to - from) as f64 / start.elapsed().as_secs_f64())
}

fn tracing_free_log(e: &str) {
    eprintln!("  (retrying after: {e})");
}

/// Restarts member `name` (SIGTERM, start) and times it to `/readyz`.
async fn restart(c: &mut ProcCluster, name: &str, wipe: bool) -> Result<f64, String> {
    let i = c.index(name);
    c.terminate(i);
    if wipe {
        c.wipe(i);
    }
    let start = Instant::now();
    c.spawn(i);
    let url = format!("{}/readyz", c.url(name));
    loop {
        if matches!(c.get(&url).await, Ok(r) if r.status == 200) {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("{name} not ready 600 s after its restart"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed().as_secs_f64())
}

struct Row {
    n: u64,
    rate: f64,
    rss: Vec<(String, u64)>,
    restart: Vec<(String, f64)>,
    fresh_prism: f64,
    meta_disk: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("stretchfs-scale: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let bin: PathBuf = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("stretchfs");
    let sizes: Vec<u64> = std::env::var("SCALE_N")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse::<u64>().map_err(|e| format!("SCALE_N: {e}")))
        .collect::<Result<_, _>>()?;
    let purchases = std::env::var("SCALE_PURCHASES").is_ok_and(|v| v == "1");
    let dir = std::env::temp_dir().join(format!("stretchfs-scale-{}", std::process::id()));
    let salt = std::process::id() as u64 ^ 0x5ca1e;
    let mut c = ProcCluster::start(&bin, &dir.join("cluster"), IP, 7600);
    c.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let names: Vec<String> = c.members.iter().map(|m| m.name.clone()).collect();
    let baseline: Vec<u64> = (0..names.len())
        .map(|i| c.pid(i).and_then(rss_bytes).unwrap_or(0))
        .collect();
    println!(
        "baseline RSS: {}",
        names
            .iter()
            .zip(&baseline)
            .map(|(n, b)| format!("{n} {:.1} MB", *b as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut rows = Vec::new();
    let mut loaded = 0;
    for &n in &sizes {
        let shared = Arc::new(c);
        // The rate at this size: the last (up to) 10k objects of the row.
        let window_from = n.saturating_sub(10_000).max(loaded);
        if window_from > loaded {
            let r = load(&shared, loaded, window_from, salt, purchases).await?;
            println!("  loaded {window_from} ({r:.0}/s)");
        }
        let rate = load(&shared, window_from, n, salt, purchases).await?;
        println!(
            "  loaded {n} ({rate:.0}/s over the last {})",
            n - window_from
        );
        loaded = n;
        c = Arc::try_unwrap(shared).map_err(|_| "a load task still holds the cluster")?;
        // Let compaction and repair settle before measuring memory.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss: Vec<(String, u64)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), c.pid(i).and_then(rss_bytes).unwrap_or(0)))
            .collect();
        let meta_disk = dir_bytes(&c.members[c.index("authority")].cfg.data_dir);
        let mut restart_times = Vec::new();
        for name in ["authority", "prism-1", "store-1"] {
            let t = restart(&mut c, name, false).await?;
            println!("  {name} ready {t:.2} s after its restart");
            restart_times.push((name.to_string(), t));
            c.wait_ready(Duration::from_secs(600)).await?;
        }
        let fresh_prism = restart(&mut c, "prism-2", true).await?;
        println!("  a fresh prism-2 ready after {fresh_prism:.2} s");
        c.wait_ready(Duration::from_secs(600)).await?;
        rows.push(Row {
            n,
            rate,
            rss,
            restart: restart_times,
            fresh_prism,
            meta_disk,
        });
    }
    print_table(&rows, &names, &baseline, purchases);
    Ok(())
}

fn print_table(rows: &[Row], names: &[String], baseline: &[u64], purchases: bool) {
    let first_rate = rows.first().map_or(1.0, |r| r.rate);
    println!();
    println!(
        "objects{}: RSS per process (bytes per object above the empty cluster), upload rate, restarts to ready",
        if purchases { " and live purchases" } else { "" }
    );
    let mut head = "| objects | upload/s (x first row) |".to_string();
    for n in names {
        head.push_str(&format!(" {n} RSS (B/obj) |"));
    }
    head.push_str(
        " authority restart | prism restart | store restart | fresh prism | authority data dir |",
    );
    println!("{head}");
    println!("{}", "|---".repeat(head.matches('|').count() - 1) + "|");
    for r in rows {
        let mut line = format!("| {} | {:.0} ({:.2}x) |", r.n, r.rate, r.rate / first_rate);
        for (i, (_, rss)) in r.rss.iter().enumerate() {
            let per = rss.saturating_sub(baseline[i]) as f64 / r.n as f64;
            line.push_str(&format!(" {:.0} MB ({per:.0}) |", *rss as f64 / 1e6));
        }
        for (_, t) in &r.restart {
            line.push_str(&format!(" {t:.2} s |"));
        }
        line.push_str(&format!(
            " {:.2} s | {:.1} MB |",
            r.fresh_prism,
            r.meta_disk as f64 / 1e6
        ));
        println!("{line}");
    }
}
