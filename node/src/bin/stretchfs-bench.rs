//! The HTTP benchmark: a local cluster of real processes against nginx,
//! wrk, sha1sum and plain fsync'd writes measured in the same run. Prints
//! one table with ratios. Run through `bench/http.sh` (installs nginx, wrk).

use hyper::Method;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stretchfs::client::{call, full};
use stretchfs::local_cluster::ProcCluster;
use stretchfs_core::hash::{ContentHash, HashKind};
use stretchfs_core::ClusterId;
use stretchfs_transport_http::Signer;

const IP: &str = "127.0.0.31";
const NGINX_PORT: u16 = 18080;
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// `wrk` for `secs` seconds; requests per second.
fn wrk(url: &str, secs: u32, conns: u32) -> Result<f64, String> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{conns}"), &format!("-d{secs}s"), url])
        .output()
        .map_err(|e| format!("wrk: {e} (run bench/http.sh, which installs it)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx or 3xx responses") {
        return Err(format!("wrk saw errors from {url}:\n{text}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("wrk printed no rate:\n{text}"))
}

struct Nginx(Child);

impl Drop for Nginx {
    /// SIGTERM: the master stops its workers too (SIGKILL would orphan them).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn start_nginx(dir: &Path, redirect_to: &str) -> Result<Nginx, String> {
    let conf = format!(
        r#"daemon off;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {IP}:{NGINX_PORT};
        root {dir}/www;
        location = /redirect {{ return 302 {redirect_to}; }}
    }}
}}
"#,
        dir = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .args(["-c", &dir.join("nginx.conf").display().to_string()])
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nginx: {e} (run bench/http.sh, which installs it)"))?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(Nginx(child))
}

fn random_file(path: &Path, size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(path, &bytes).expect("write bench file");
    bytes
}

struct Row {
    name: String,
    ours: String,
    reference: String,
    what: String,
    ratio: String,
}

fn row(name: &str, ours: f64, unit: &str, reference: f64, what: &str) -> Row {
    Row {
        name: name.into(),
        ours: format!("{ours:.0} {unit}"),
        reference: format!("{reference:.0} {unit}"),
        what: what.into(),
        ratio: format!("{:.2}x", ours / reference),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("stretchfs-bench: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let bin: PathBuf = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("stretchfs");
    let dir = std::env::temp_dir().join(format!("stretchfs-bench-{}", std::process::id()));
    let secs: u32 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut c = ProcCluster::start(&bin, &dir.join("cluster"), IP, 7400);
    c.wait_ready(Duration::from_secs(30)).await?;
    let www = dir.join("www");
    std::fs::create_dir_all(&www).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();

    // One 1 MiB content, purchased.
    let mib = random_file(&www.join("1m.bin"), 1 << 20);
    let hash = ContentHash::compute(HashKind::Sha1, &mib).to_string();
    let r = c.upload("prism-1", mib.clone(), "bin").await?;
    if r.status != 201 {
        return Err(format!("upload: {}", r.text()));
    }
    let p = c.purchase("prism-1", &hash, "bin", "2h").await?.json()?;
    let token = p["token"].as_str().ok_or("no token")?.to_string();
    let deliver_url = format!("{}/p/{token}/{hash}.bin", c.url("prism-1"));
    let first = c.get(&deliver_url).await?;
    let location = first.header("location").ok_or("no redirect")?.to_string();
    // A store URL valid for the whole run.
    let store_addr = location
        .strip_prefix("http://")
        .and_then(|s| s.split('/').next())
        .ok_or("bad location")?
        .to_string();
    let store_id = location
        .split_once("?n=")
        .and_then(|(_, q)| q.split('&').next())
        .ok_or("no store in the location")?
        .to_string();
    let cluster =
        ClusterId(u128::from_str_radix(&c.secrets.cluster_id, 16).map_err(|e| e.to_string())?);
    let signer = Signer::new(cluster, c.secrets.cluster_secret.as_bytes(), 30);
    let path = format!("/c/{hash}.bin");
    let expires = stretchfs_transport_http::client::unix_secs() + 7200;
    let store_url = format!(
        "http://{store_addr}{path}?n={store_id}&e={expires}&s={}",
        signer.sign_url(&path, &store_id, expires)
    );

    let _nginx = start_nginx(&dir, &location)?;
    let nginx_redirect = format!("http://{IP}:{NGINX_PORT}/redirect");
    let nginx_file = format!("http://{IP}:{NGINX_PORT}/1m.bin");
    let check = c.get(&nginx_file).await?;
    if check.status != 200 || check.body.len() != mib.len() {
        return Err(format!("nginx does not serve the file: {}", check.status));
    }

    // Redirects and 1 MiB GETs, interleaved runs, medians.
    let (mut ours_r, mut ng_r, mut ours_g, mut ng_g) = (vec![], vec![], vec![], vec![]);
    let mut ceiling = vec![];
    let healthz = format!("{}/healthz", c.url("prism-1"));
    for _ in 0..RUNS {
        ceiling.push(wrk(&healthz, secs, 64)?);
        ours_r.push(wrk(&deliver_url, secs, 64)?);
        ng_r.push(wrk(&nginx_redirect, secs, 64)?);
        ours_g.push(wrk(&store_url, secs, 16)?);
        ng_g.push(wrk(&nginx_file, secs, 16)?);
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.0}k", x / 1000.0))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("runs (req/s), interleaved:");
    println!("  deliver redirects  {}", show(&ours_r));
    println!("  prism /healthz     {}", show(&ceiling));
    println!("  nginx return 302   {}", show(&ng_r));
    println!("  1 MiB store GET    {}", show(&ours_g));
    println!("  1 MiB nginx        {}", show(&ng_g));
    rows.push(row(
        "deliver redirects (GET /p/..., 302)",
        median(ours_r),
        "req/s",
        median(ng_r.clone()),
        "nginx `return 302`",
    ));
    rows.push(row(
        "  (context) prism GET /healthz, no work",
        median(ceiling),
        "req/s",
        median(ng_r.clone()),
        "nginx `return 302`",
    ));
    rows.push(row(
        "1 MiB GET from a store",
        median(ours_g),
        "req/s",
        median(ng_g),
        "nginx static file",
    ));

    // 1 KiB uploads, R = 2, 16 at a time.
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs as u64);
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let url = format!(
            "{}/v1/content?ext=bin",
            c.url(if t % 2 == 0 { "prism-1" } else { "prism-2" })
        );
        let auth = format!("Bearer {}", c.secrets.api_key);
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < until {
                let mut body = vec![0u8; 1024];
                body[..8].copy_from_slice(&t.to_le_bytes());
                body[8..16].copy_from_slice(&i.to_le_bytes());
                body[16..24].copy_from_slice(&rand::random::<u64>().to_le_bytes());
                i += 1;
                let r = call(
                    Method::PUT,
                    &url,
                    &[("authorization", &auth)],
                    full(body),
                    Duration::from_secs(30),
                )
                .await;
                match r {
                    Ok(r) if r.status == 201 => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => eprintln!("upload answered {}: {}", r.status, r.text()),
                    Err(e) => eprintln!("upload: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let uploads = done.load(Ordering::Relaxed) as f64 / secs as f64;
    // Reference: the disk work an upload needs at minimum, two 1 KiB files
    // written and fsynced (one per copy), done serially.
    let fsync_dir = dir.join("fsync");
    std::fs::create_dir_all(&fsync_dir).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for k in 0..2 {
            use std::io::Write;
            let p = fsync_dir.join(format!("{n}-{k}"));
            let mut f = std::fs::File::create(&p).map_err(|e| e.to_string())?;
            f.write_all(&[7u8; 1024]).map_err(|e| e.to_string())?;
            f.sync_all().map_err(|e| e.to_string())?;
        }
        n += 1;
    }
    let fsyncs = n as f64 / start.elapsed().as_secs_f64();
    rows.push(row(
        "1 KiB uploads, R=2 (16 concurrent)",
        uploads,
        "uploads/s",
        fsyncs,
        "2 x (write 1 KiB + fsync), serial",
    ));

    // Large upload vs sha1sum of the same bytes.
    let big_path = dir.join("big.bin");
    let big = random_file(&big_path, 256 << 20);
    drop(big);
    let mut ours_mb = vec![];
    let mut sha_mb = vec![];
    for run in 0..RUNS {
        // A different file each run (content-addressed: the same bytes
        // would be "already stored").
        {
            use std::io::{Seek, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&big_path)
                .map_err(|e| e.to_string())?;
            f.seek(std::io::SeekFrom::Start(0))
                .map_err(|e| e.to_string())?;
            f.write_all(&(run as u64 + 1).to_le_bytes())
                .map_err(|e| e.to_string())?;
        }
        let t = Instant::now();
        let out = Command::new("sha1sum")
            .arg(&big_path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err("sha1sum failed".into());
        }
        sha_mb.push(256.0 / t.elapsed().as_secs_f64());
        let body = stretchfs::runtime::file_body(&big_path, 0, 256 << 20)
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("{}/v1/content?ext=bin", c.url("prism-1"));
        let auth = format!("Bearer {}", c.secrets.api_key);
        let t = Instant::now();
        let r = call(
            Method::PUT,
            &url,
            &[("authorization", &auth)],
            body,
            Duration::from_secs(300),
        )
        .await?;
        if r.status != 201 {
            return Err(format!("large upload: {}", r.text()));
        }
        ours_mb.push(256.0 / t.elapsed().as_secs_f64());
    }
    rows.push(row(
        "256 MiB upload (hash, spool, 2 copies, fsync)",
        median(ours_mb),
        "MB/s",
        median(sha_mb),
        "sha1sum of the same file",
    ));

    // Feed propagation: purchase on prism-1, then how soon prism-2's
    // replica holds it, and how soon prism-2 delivers it.
    let mut in_replica = vec![];
    let mut deliverable = vec![];
    let url2 = c.url("prism-2");
    for _ in 0..100 {
        let before = c.status("prism-2").await?.purchases;
        // Timed from the moment the creation is acknowledged.
        let p = c.purchase("prism-1", &hash, "bin", "1h").await?.json()?;
        let token = p["token"].as_str().ok_or("no token")?.to_string();
        let t = Instant::now();
        loop {
            let r = c.get(&format!("{url2}/p/{token}/{hash}.bin")).await?;
            if r.status == 302 {
                break;
            }
            if t.elapsed() > Duration::from_secs(5) {
                return Err(format!("never deliverable on prism-2: {}", r.text()));
            }
        }
        deliverable.push(t.elapsed().as_secs_f64() * 1000.0);
        loop {
            if c.status("prism-2").await?.purchases > before {
                break;
            }
            if t.elapsed() > Duration::from_secs(5) {
                return Err("never in prism-2's replica".into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        in_replica.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // kill -9 a store: time until every other node shows it down.
    let mut downs = vec![];
    let si = c.index("store-3");
    for _ in 0..5 {
        let id = c.status("store-3").await?.node;
        let t = Instant::now();
        c.kill(si);
        loop {
            let mut all = true;
            for (i, m) in c.members.iter().enumerate() {
                if c.running(i) {
                    let s = c.status(&m.name).await?;
                    all &= s.nodes.iter().any(|n| n.id == id && n.down);
                }
            }
            if all {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err("killed store never down everywhere".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        downs.push(t.elapsed().as_secs_f64() * 1000.0);
        c.spawn(si);
        // Back up everywhere before the next round.
        let t = Instant::now();
        loop {
            let s = c.status("authority").await?;
            if s.nodes.iter().any(|n| n.id == id && !n.down) {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err("restarted store never came back".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    println!();
    println!(
        "{:<46} {:>18} {:>18}  {:<36} {:>7}",
        "benchmark (median of 5 runs)", "ours", "reference", "reference is", "ratio"
    );
    for r in &rows {
        println!(
            "{:<46} {:>18} {:>18}  {:<36} {:>7}",
            r.name, r.ours, r.reference, r.what, r.ratio
        );
    }
    println!();
    println!(
        "feed propagation, purchase on prism-1 -> in prism-2's replica: n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        in_replica.len(),
        percentile(&in_replica, 0.5),
        percentile(&in_replica, 0.99),
        percentile(&in_replica, 1.0)
    );
    println!(
        "purchase on prism-1 -> deliverable on prism-2:                n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        deliverable.len(),
        percentile(&deliverable, 0.5),
        percentile(&deliverable, 0.99),
        percentile(&deliverable, 1.0)
    );
    println!(
        "kill -9 store -> down on every node:                           n={} p50={:.0}ms max={:.0}ms",
        downs.len(),
        percentile(&downs, 0.5),
        percentile(&downs, 1.0)
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
