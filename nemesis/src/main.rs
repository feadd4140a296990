//! `stretchfs-nemesis`: the dev layout as separate `stretchfs` processes
//! on their own loopback addresses, several concurrent clients, faults
//! chosen by the seed, then a heal, a final verification and the checker.

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stretchfs::client::{call, empty, full};
use stretchfs::local_cluster::ProcCluster;
use stretchfs_core::hash::{ContentHash, HashKind};
use stretchfs_nemesis::checker::{self, Params, Report};
use stretchfs_nemesis::faults::{self, Machine};
use stretchfs_nemesis::history::{DiskCopies, Fault, History, Op, OpKind, Outcome, Phase};

#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(about = "Faults under a mixed load on real stretchfs processes, checked afterwards")]
struct Args {
    /// Seconds of load under the nemesis (the heal and the verification
    /// come after).
    #[arg(long, default_value_t = 120)]
    secs: u64,
    /// Chooses the faults, their targets and timing, and the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Writes the summary (operations, violations, timeline) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Writes every recorded operation here, one JSON object a line.
    #[arg(long)]
    history: Option<PathBuf>,
    /// The stretchfs binary (default: target/release/stretchfs next to this
    /// binary).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Nodes listen on <net>.1 .. <net>.6.
    #[arg(long, default_value = "127.0.77")]
    net: String,
    #[arg(long, default_value_t = 7400)]
    port: u16,
    /// Seconds after the heal within which every acknowledged upload must
    /// be on R distinct stores in distinct zones.
    #[arg(long, default_value_t = 120)]
    heal_secs: u64,
    /// The signed delivery URL lifetime given to the cluster (the
    /// revocation bound is this plus 5 s of propagation).
    #[arg(long, default_value_t = 15)]
    url_ttl: u64,
    /// Leave out one kind of fault (kill, pause, wipe_store,
    /// wipe_authority, partition, disk_full, clock); repeatable.
    #[arg(long)]
    without: Vec<String>,
    /// No deletes (nor re-uploads of deleted bytes) in the workload.
    #[arg(long)]
    no_delete: bool,
    /// Where the cluster's data and logs go (kept when violations are
    /// found).
    #[arg(long)]
    dir: Option<PathBuf>,
}

const R: usize = 2;
const PRISMS: [&str; 2] = ["prism-1", "prism-2"];
const STORES: [&str; 3] = ["store-1", "store-2", "store-3"];
const NODES: [&str; 6] = [
    "authority",
    "store-1",
    "store-2",
    "store-3",
    "prism-1",
    "prism-2",
];
/// The largest data directory moved onto a tmpfs (memory) for a full disk.
const MAX_TMPFS: u64 = 3 << 30;
const ALLOWED_REF: &str = "https://www.shop.example/page";
const REFUSED_REF: &str = "https://evil.example/";

// ---- the record ---------------------------------------------------------

struct Rec {
    t0: Instant,
    ops: Mutex<Vec<Op>>,
    faults: Mutex<Vec<Fault>>,
    next: AtomicU64,
}

impl Rec {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        client: u32,
        hash: &str,
        start: f64,
        kind: OpKind,
        outcome: Outcome,
        phase: Phase,
    ) {
        let op = Op {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            client,
            hash: hash.to_string(),
            start,
            end: self.now(),
            kind,
            outcome,
            phase,
        };
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }
}

// ---- the content ------------------------------------------------------

#[derive(Clone)]
struct Blob {
    seed: u64,
    size: usize,
    hash: String,
    ext: String,
}

fn blob_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn sha1(b: &[u8]) -> String {
    ContentHash::compute(HashKind::Sha1, b).to_string()
}

impl Blob {
    fn new(seed: u64, size: usize, ext: &str) -> Blob {
        Blob {
            seed,
            size,
            hash: sha1(&blob_bytes(seed, size)),
            ext: ext.to_string(),
        }
    }
    fn bytes(&self) -> Vec<u8> {
        blob_bytes(self.seed, self.size)
    }
}

#[derive(Clone)]
struct Tok {
    token: String,
    blob: Blob,
    restricted: bool,
}

#[derive(Default)]
struct Model {
    present: Vec<Blob>,
    deleted: Vec<Blob>,
    tokens: Vec<Tok>,
    revoked: Vec<Tok>,
    all: BTreeMap<String, Blob>,
}

fn pick<T: Clone>(rng: &mut StdRng, v: &[T]) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        // Recent entries more often.
        let n = v.len();
        let i = if rng.random_bool(0.6) {
            n - 1 - rng.random_range(0..n.min(50))
        } else {
            rng.random_range(0..n)
        };
        Some(v[i].clone())
    }
}

// ---- the client ---------------------------------------------------------

struct Ctx {
    rec: Rec,
    urls: BTreeMap<String, String>,
    api_key: String,
    model: Mutex<Model>,
    big_in_flight: AtomicBool,
    load_end: f64,
    stop: AtomicBool,
    no_delete: bool,
}

const T_SMALL: Duration = Duration::from_secs(10);

fn timeout_for(size: usize) -> Duration {
    if size > 4 << 20 {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(20)
    }
}

fn outcome(r: &Result<stretchfs::client::Reply, String>) -> Outcome {
    match r {
        Ok(r) => Outcome::Status(r.status),
        Err(e) => Outcome::NoAnswer(e.clone()),
    }
}

/// Retries a request on 503 or no answer, as a real client would: up to
/// `tries` attempts with a growing pause. Every attempt is recorded by `f`.
async fn retrying<F, Fut>(tries: u32, mut f: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let mut o = Outcome::NoAnswer("not tried".into());
    for k in 0..tries {
        o = f().await;
        if !o.unavailable() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200 << k.min(3))).await;
    }
    o
}

/// `retrying` for requests that also yield a value (from the last attempt).
async fn retrying_with<T, F, Fut>(tries: u32, mut f: F) -> (Outcome, Option<T>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (Outcome, Option<T>)>,
{
    let mut last = (Outcome::NoAnswer("not tried".into()), None);
    for k in 0..tries {
        last = f().await;
        if !last.0.unavailable() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200 << k.min(3))).await;
    }
    last
}

impl Ctx {
    fn auth(&self) -> String {
        format!("Bearer {}", self.api_key)
    }

    async fn upload_once(&self, client: u32, prism: &str, b: &Blob, phase: Phase) -> Outcome {
        let url = format!("{}/v1/content?ext={}", self.urls[prism], b.ext);
        let start = self.rec.now();
        let auth = self.auth();
        let r = call(
            hyper::Method::PUT,
            &url,
            &[("authorization", &auth)],
            full(b.bytes()),
            timeout_for(b.size),
        )
        .await;
        let mut o = outcome(&r);
        let mut copies = Vec::new();
        if let Ok(r) = &r {
            let j = r.json().unwrap_or_default();
            // An acknowledgement must name the bytes we sent.
            if r.status == 201 && j["hash"].as_str() != Some(b.hash.as_str()) {
                o = Outcome::NoAnswer(format!("201 without our hash: {}", r.text()));
            }
            if let Some(cs) = j["copies"].as_array() {
                copies = cs
                    .iter()
                    .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string))
                    .collect();
            }
        }
        let kind = OpKind::Upload {
            prism: prism.to_string(),
            size: b.size as u64,
            copies,
        };
        self.rec
            .push(client, &b.hash, start, kind, o.clone(), phase);
        o
    }

    async fn upload(&self, client: u32, prism: &str, b: &Blob, phase: Phase) -> Outcome {
        retrying(3, || self.upload_once(client, prism, b, phase)).await
    }

    async fn delete(&self, client: u32, prism: &str, b: &Blob) -> Outcome {
        retrying(3, || async {
            let url = format!("{}/v1/content/{}", self.urls[prism], b.hash);
            let start = self.rec.now();
            let auth = self.auth();
            let r = call(
                hyper::Method::DELETE,
                &url,
                &[("authorization", &auth)],
                empty(),
                T_SMALL,
            )
            .await;
            let o = outcome(&r);
            self.rec.push(
                client,
                &b.hash,
                start,
                OpKind::Delete,
                o.clone(),
                Phase::Load,
            );
            o
        })
        .await
    }

    async fn exists(&self, client: u32, prism: &str, blobs: &[Blob]) {
        let url = format!("{}/v1/content/exists", self.urls[prism]);
        let hashes: Vec<&str> = blobs.iter().map(|b| b.hash.as_str()).collect();
        let body = serde_json::json!({ "hashes": hashes }).to_string();
        let start = self.rec.now();
        let r = call(
            hyper::Method::POST,
            &url,
            &[("content-type", "application/json")],
            full(body),
            T_SMALL,
        )
        .await;
        let o = outcome(&r);
        let answer = r
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| r.json().ok());
        for b in blobs {
            let present = answer.as_ref().and_then(|j| j["exists"][&b.hash].as_bool());
            self.rec.push(
                client,
                &b.hash,
                start,
                OpKind::Exists { present },
                o.clone(),
                Phase::Load,
            );
        }
    }

    /// A purchase; `Some(token)` when acknowledged.
    #[allow(clippy::too_many_arguments)]
    async fn purchase(
        &self,
        client: u32,
        prism: &str,
        b: &Blob,
        life: u64,
        refs: &[&str],
        tries: u32,
        phase: Phase,
    ) -> (Outcome, Option<String>) {
        retrying_with(tries, || async {
            let url = format!("{}/v1/purchases", self.urls[prism]);
            let body =
                serde_json::json!({"hash": b.hash, "ext": b.ext, "life": life, "referrers": refs})
                    .to_string();
            let start = self.rec.now();
            let auth = self.auth();
            let r = call(
                hyper::Method::POST,
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                full(body),
                T_SMALL,
            )
            .await;
            let mut o = outcome(&r);
            let (mut tok, mut expires) = (None, None);
            if let Ok(r) = &r {
                if r.status == 201 {
                    let j = r.json().unwrap_or_default();
                    tok = j["token"].as_str().map(str::to_string);
                    expires = j["expires"].as_u64();
                    if tok.is_none() {
                        o = Outcome::NoAnswer(format!("201 without a token: {}", r.text()));
                    }
                }
            }
            let kind = OpKind::Purchase {
                life_secs: life,
                referrers: refs.iter().map(|s| s.to_string()).collect(),
                token: tok.clone(),
                expires,
            };
            self.rec
                .push(client, &b.hash, start, kind, o.clone(), phase);
            (o, tok)
        })
        .await
    }

    /// Delivers through `prism`, follows the redirect, checks the bytes.
    async fn deliver_once(
        &self,
        client: u32,
        prism: &str,
        t: &Tok,
        referer: Option<&str>,
        range: Option<(u64, u64)>,
        phase: Phase,
    ) -> (Outcome, Option<bool>) {
        let b = &t.blob;
        let url = format!("{}/p/{}/file.{}", self.urls[prism], t.token, b.ext);
        let start = self.rec.now();
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(r) = referer {
            headers.push(("referer", r));
        }
        let first = call(hyper::Method::GET, &url, &headers, empty(), T_SMALL).await;
        let o = outcome(&first);
        let (mut store_status, mut bytes_ok) = (None, None);
        if let Ok(f) = &first {
            if f.status == 302 {
                if let Some(loc) = f.header("location") {
                    let rh = range.map(|(a, z)| format!("bytes={a}-{z}"));
                    let mut h2: Vec<(&str, &str)> = Vec::new();
                    if let Some(r) = &rh {
                        h2.push(("range", r));
                    }
                    let second =
                        call(hyper::Method::GET, loc, &h2, empty(), timeout_for(b.size)).await;
                    match second {
                        Ok(s) => {
                            store_status = Some(s.status);
                            bytes_ok = match (s.status, range) {
                                (200, _) => Some(s.body.len() == b.size && sha1(&s.body) == b.hash),
                                (206, Some((a, z))) => {
                                    let all = b.bytes();
                                    let want = &all[a as usize..=(z as usize).min(b.size - 1)];
                                    Some(&s.body[..] == want)
                                }
                                (206, None) => Some(false),
                                _ => None,
                            };
                        }
                        Err(_) => store_status = None,
                    }
                }
            }
        }
        let kind = OpKind::Deliver {
            prism: prism.to_string(),
            token: t.token.clone(),
            referer: referer.map(str::to_string),
            range,
            store_status,
            bytes_ok,
        };
        self.rec
            .push(client, &b.hash, start, kind, o.clone(), phase);
        (o, bytes_ok)
    }

    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &self,
        client: u32,
        prism: &str,
        t: &Tok,
        referer: Option<&str>,
        range: Option<(u64, u64)>,
        tries: u32,
        phase: Phase,
    ) -> Option<bool> {
        retrying_with(tries, || {
            self.deliver_once(client, prism, t, referer, range, phase)
        })
        .await
        .1
    }

    async fn revoke(&self, client: u32, prism: &str, t: &Tok) -> Outcome {
        retrying(3, || async {
            let url = format!("{}/v1/purchases/{}", self.urls[prism], t.token);
            let start = self.rec.now();
            let auth = self.auth();
            let r = call(
                hyper::Method::DELETE,
                &url,
                &[("authorization", &auth)],
                empty(),
                T_SMALL,
            )
            .await;
            let o = outcome(&r);
            let kind = OpKind::Revoke {
                token: t.token.clone(),
            };
            self.rec
                .push(client, &t.blob.hash, start, kind, o.clone(), Phase::Load);
            o
        })
        .await
    }

    fn new_blob(&self, rng: &mut StdRng) -> Blob {
        let roll = rng.random_range(0..100);
        let size = if roll < 55 {
            rng.random_range(1 << 10..64 << 10)
        } else if roll < 85 {
            rng.random_range(64 << 10..1 << 20)
        } else if roll < 98 || self.big_in_flight.load(Ordering::Relaxed) {
            rng.random_range(1 << 20..4 << 20)
        } else {
            rng.random_range(18 << 20..21 << 20)
        };
        let ext = ["bin", "txt", "jpg", "mp4"][rng.random_range(0..4)];
        let b = Blob::new(rng.random(), size, ext);
        self.model
            .lock()
            .unwrap()
            .all
            .insert(b.hash.clone(), b.clone());
        b
    }

    fn live(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && self.rec.now() < self.load_end
    }
}

async fn client_loop(ctx: Arc<Ctx>, client: u32, seed: u64) {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(client as u64 + 1)));
    while ctx.live() {
        let prism = PRISMS[rng.random_range(0..2)];
        let mut roll = rng.random_range(0..100);
        if ctx.no_delete && roll >= 87 {
            roll = 0;
        }
        match roll {
            0..=15 => {
                let b = ctx.new_blob(&mut rng);
                let big = b.size > 4 << 20;
                if big {
                    ctx.big_in_flight.store(true, Ordering::Relaxed);
                }
                if ctx.upload(client, prism, &b, Phase::Load).await.is(201) {
                    ctx.model.lock().unwrap().present.push(b);
                }
                if big {
                    ctx.big_in_flight.store(false, Ordering::Relaxed);
                }
            }
            16..=18 => {
                // The same bytes from two clients at once, through both prisms.
                let mut b = ctx.new_blob(&mut rng);
                if b.size > 4 << 20 {
                    b = Blob::new(b.seed, 100 << 10, &b.ext);
                    ctx.model
                        .lock()
                        .unwrap()
                        .all
                        .insert(b.hash.clone(), b.clone());
                }
                let (x, y) = tokio::join!(
                    ctx.upload(client, "prism-1", &b, Phase::Load),
                    ctx.upload(client + 100, "prism-2", &b, Phase::Load)
                );
                if x.is(201) || y.is(201) {
                    ctx.model.lock().unwrap().present.push(b);
                }
            }
            19..=25 => {
                let blobs: Vec<Blob> = {
                    let m = ctx.model.lock().unwrap();
                    (0..4)
                        .filter_map(|k| {
                            pick(&mut rng, if k % 2 == 0 { &m.present } else { &m.deleted })
                        })
                        .collect()
                };
                if !blobs.is_empty() {
                    ctx.exists(client, prism, &blobs).await;
                }
            }
            26..=40 => {
                let Some(b) = pick(&mut rng, &ctx.model.lock().unwrap().present) else {
                    continue;
                };
                let life = if rng.random_bool(0.7) {
                    3600
                } else {
                    rng.random_range(4..20)
                };
                let restricted = rng.random_bool(0.3);
                let refs: &[&str] = if restricted { &["shop.example"] } else { &[] };
                if let (_, Some(token)) = ctx
                    .purchase(client, prism, &b, life, refs, 3, Phase::Load)
                    .await
                {
                    ctx.model.lock().unwrap().tokens.push(Tok {
                        token,
                        blob: b,
                        restricted,
                    });
                }
            }
            41..=78 => {
                let Some(t) = pick(&mut rng, &ctx.model.lock().unwrap().tokens) else {
                    continue;
                };
                let referer = match (t.restricted, rng.random_range(0..100)) {
                    (true, 0..=59) => Some(ALLOWED_REF),
                    (true, 60..=84) => Some(REFUSED_REF),
                    (true, _) => None,
                    (false, 0..=19) => Some(REFUSED_REF),
                    (false, _) => None,
                };
                let range = if rng.random_bool(0.25) && t.blob.size > 10 {
                    let a = rng.random_range(0..t.blob.size as u64 - 1);
                    let z = rng.random_range(a..(a + (256 << 10)).min(t.blob.size as u64));
                    Some((a, z))
                } else {
                    None
                };
                ctx.deliver(client, prism, &t, referer, range, 3, Phase::Load)
                    .await;
            }
            79..=81 => {
                let Some(t) = pick(&mut rng, &ctx.model.lock().unwrap().tokens) else {
                    continue;
                };
                if ctx.revoke(client, prism, &t).await.is(200) {
                    let mut m = ctx.model.lock().unwrap();
                    m.tokens.retain(|x| x.token != t.token);
                    m.revoked.push(t);
                }
            }
            82..=86 => {
                let Some(t) = pick(&mut rng, &ctx.model.lock().unwrap().revoked) else {
                    continue;
                };
                ctx.deliver(client, prism, &t, Some(ALLOWED_REF), None, 1, Phase::Load)
                    .await;
            }
            87..=91 => {
                let Some(b) = pick(&mut rng, &ctx.model.lock().unwrap().present) else {
                    continue;
                };
                if ctx.delete(client, prism, &b).await.is(200) {
                    let mut m = ctx.model.lock().unwrap();
                    m.present.retain(|x| x.hash != b.hash);
                    m.deleted.push(b);
                }
            }
            _ => {
                let Some(b) = pick(&mut rng, &ctx.model.lock().unwrap().deleted) else {
                    continue;
                };
                if ctx.upload(client, prism, &b, Phase::Load).await.is(201) {
                    let mut m = ctx.model.lock().unwrap();
                    m.deleted.retain(|x| x.hash != b.hash);
                    m.present.push(b);
                }
            }
        }
        {
            let mut m = ctx.model.lock().unwrap();
            if m.tokens.len() > 3000 {
                m.tokens.drain(..1000);
            }
            if m.revoked.len() > 1000 {
                m.revoked.drain(..300);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..60))).await;
    }
}

// ---- the cluster and the nemesis ---------------------------------------

struct World {
    cluster: Mutex<ProcCluster>,
    machine: Machine,
    ips: BTreeMap<String, Ipv4Addr>,
    zones: BTreeMap<String, String>,
    data_dirs: BTreeMap<String, PathBuf>,
    faketime: Option<PathBuf>,
}

impl World {
    fn with<T>(&self, f: impl FnOnce(&mut ProcCluster) -> T) -> T {
        f(&mut self.cluster.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn idx(&self, name: &str) -> usize {
        self.with(|c| c.index(name))
    }
    fn cleanup(&self) {
        self.with(|c| c.kill_all());
        self.machine.cleanup();
    }
}

/// Kills everything and undoes every rule and mount when dropped, also
/// while unwinding from a panic.
struct Guard(Arc<World>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}

async fn wait_ready(urls: &BTreeMap<String, String>, within: Duration) -> Result<f64, String> {
    let start = Instant::now();
    for (name, url) in urls {
        loop {
            let r = call(
                hyper::Method::GET,
                &format!("{url}/readyz"),
                &[],
                empty(),
                Duration::from_secs(2),
            )
            .await;
            if matches!(r, Ok(r) if r.status == 200) {
                break;
            }
            if start.elapsed() > within {
                return Err(format!("{name} not ready within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill,
    Pause,
    WipeStore,
    WipeAuthority,
    Partition,
    DiskFull,
    Clock,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::WipeStore => "wipe_store",
            Kind::WipeAuthority => "wipe_authority",
            Kind::Partition => "partition",
            Kind::DiskFull => "disk_full",
            Kind::Clock => "clock",
        }
    }
}

fn du(dir: &Path) -> u64 {
    const PAGE: u64 = 4096;
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => PAGE + walk(&e.path()),
                // tmpfs holds whole pages: a 1 KiB file takes 4 KiB.
                Ok(m) => m.len().div_ceil(PAGE) * PAGE,
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One fault: inject, hold, heal; returns its record.
async fn fault(
    world: Arc<World>,
    ctx: Arc<Ctx>,
    kind: Kind,
    target: String,
    hold: Duration,
    rng_seed: u64,
) -> Fault {
    let mut rng = StdRng::seed_from_u64(rng_seed);
    let start = ctx.rec.now();
    let i = world.idx(&target);
    let mut detail = String::new();
    match kind {
        Kind::Kill => {
            let shaped = target == "authority";
            let mut before = None;
            if shaped {
                // The shape of bug 7 of issue 7: acknowledged just before the
                // authority dies (and while it is down), purchased right
                // after it is back.
                let b = ctx.new_blob(&mut rng);
                let b = Blob::new(b.seed, 20 << 10, "bin");
                ctx.model
                    .lock()
                    .unwrap()
                    .all
                    .insert(b.hash.clone(), b.clone());
                if ctx.upload(1000, "prism-1", &b, Phase::Load).await.is(201) {
                    before = Some(b);
                }
            }
            world.with(|c| c.kill(i));
            let mut during = None;
            if shaped {
                let b = Blob::new(rng.random(), 30 << 10, "bin");
                ctx.model
                    .lock()
                    .unwrap()
                    .all
                    .insert(b.hash.clone(), b.clone());
                if ctx.upload(1001, "prism-2", &b, Phase::Load).await.is(201) {
                    during = Some(b);
                }
            }
            tokio::time::sleep(hold).await;
            world.with(|c| c.spawn(i));
            if shaped {
                let mut said = Vec::new();
                for (name, b) in [("before", before), ("during", during)] {
                    let Some(b) = b else {
                        said.push(format!("upload {name} the kill not acknowledged"));
                        continue;
                    };
                    let (o, _) = ctx
                        .purchase(1002, "prism-1", &b, 3600, &[], 40, Phase::Load)
                        .await;
                    said.push(format!(
                        "purchase of the upload acknowledged {name} the kill: {}",
                        o.label()
                    ));
                    ctx.model.lock().unwrap().present.push(b);
                }
                detail = said.join("; ");
            }
        }
        Kind::Pause => {
            world.with(|c| c.pause(i));
            tokio::time::sleep(hold).await;
            world.with(|c| c.resume(i));
        }
        Kind::WipeStore | Kind::WipeAuthority => {
            world.with(|c| {
                c.kill(i);
                c.wipe(i);
            });
            tokio::time::sleep(hold).await;
            world.with(|c| c.spawn(i));
        }
        Kind::Partition => {
            let ips = &world.ips;
            let ip = |n: &str| ips[n];
            let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != target).collect();
            let mut links = Vec::new();
            match rng.random_range(0..3) {
                0 => {
                    detail = format!("{target} isolated both ways");
                    for o in &others {
                        links.push((ip(&target), ip(o)));
                        links.push((ip(o), ip(&target)));
                    }
                }
                1 => {
                    let o = others[rng.random_range(0..others.len())];
                    detail = format!("one way: {target} -> {o} dropped");
                    links.push((ip(&target), ip(o)));
                }
                _ => {
                    let o = others[rng.random_range(0..others.len())];
                    detail = format!("{target} <-> {o} cut both ways");
                    links.push((ip(&target), ip(o)));
                    links.push((ip(o), ip(&target)));
                }
            }
            for (a, b) in &links {
                if let Err(e) = world.machine.drop_link(*a, *b) {
                    detail.push_str(&format!(" (rule failed: {e})"));
                }
            }
            tokio::time::sleep(hold).await;
            // Only this fault's rules: another partition may overlap.
            world.machine.undrop(&links);
        }
        Kind::DiskFull => {
            let dir = world.data_dirs[&target].clone();
            let real = dir.with_extension("real");
            let used = du(&dir);
            if used > MAX_TMPFS {
                return Fault {
                    kind: "disk_full_skipped".to_string(),
                    target,
                    start,
                    end: ctx.rec.now(),
                    detail: format!(
                        "{} MiB of data: more than a tmpfs in memory should hold",
                        used >> 20
                    ),
                };
            }
            world.with(|c| c.kill(i));
            let used = du(&dir);
            // Room for what is there and a little more: the store fills it.
            let size = used + used / 16 + (3 << 20);
            let mounted = std::fs::rename(&dir, &real)
                .map_err(|e| format!("rename: {e}"))
                .and_then(|_| {
                    world.machine.mount_tmpfs(&dir, size).inspect_err(|_| {
                        let _ = std::fs::rename(&real, &dir);
                    })
                });
            let setup = mounted.clone().and_then(|_| copy_dir(&real, &dir));
            if let (Ok(()), Err(e)) = (&mounted, &setup) {
                // The copy did not fit: put the real directory back untouched.
                let _ = world.machine.unmount(&dir);
                let _ = std::fs::remove_dir(&dir);
                let _ = std::fs::rename(&real, &dir);
                world.with(|c| c.spawn(i));
                return Fault {
                    kind: "disk_full_skipped".to_string(),
                    target,
                    start,
                    end: ctx.rec.now(),
                    detail: format!("copy onto a {} KiB tmpfs failed: {e}", size >> 10),
                };
            }
            detail = match &setup {
                Ok(()) => format!(
                    "data dir on a {} KiB tmpfs ({} KiB used)",
                    size >> 10,
                    used >> 10
                ),
                Err(e) => format!("tmpfs failed: {e}"),
            };
            world.with(|c| c.spawn(i));
            tokio::time::sleep(hold).await;
            world.with(|c| c.kill(i));
            if setup.is_ok() {
                // Copy out beside the original, then swap: a failed copy
                // leaves the original as it was before the fault.
                let fresh = dir.with_extension("fresh");
                let _ = std::fs::remove_dir_all(&fresh);
                let copied = std::fs::create_dir_all(&fresh)
                    .map_err(|e| e.to_string())
                    .and_then(|_| copy_dir(&dir, &fresh));
                if let Err(e) = world.machine.unmount(&dir) {
                    detail.push_str(&format!("; umount failed: {e}"));
                }
                let _ = std::fs::remove_dir(&dir);
                match copied {
                    Ok(()) => {
                        let _ = std::fs::remove_dir_all(&real);
                        let _ = std::fs::rename(&fresh, &real);
                    }
                    Err(e) => {
                        // Going back to the data from before the fault would
                        // be an undeclared rollback (reused vote and report
                        // counters): the store loses its disk instead.
                        detail.push_str(&format!("; copy back failed, data dir lost: {e}"));
                        let _ = std::fs::remove_dir_all(&fresh);
                        let _ = std::fs::remove_dir_all(&real);
                        let _ = std::fs::create_dir_all(&real);
                    }
                }
            }
            if real.exists() && !dir.exists() {
                if let Err(e) = std::fs::rename(&real, &dir) {
                    detail.push_str(&format!("; restoring the data dir failed: {e}"));
                }
            }
            world.with(|c| c.spawn(i));
        }
        Kind::Clock => {
            let off: i64 = rng.random_range(2..9) * if rng.random_bool(0.5) { 1 } else { -1 };
            detail = format!("clock {off:+} s");
            let lib = world.faketime.clone().unwrap_or_default();
            world.with(|c| {
                c.kill(i);
                c.set_env(i, "LD_PRELOAD", &lib.to_string_lossy());
                c.set_env(i, "FAKETIME", &format!("{off:+}"));
                c.set_env(i, "FAKETIME_DONT_FAKE_MONOTONIC", "1");
                c.spawn(i);
            });
            tokio::time::sleep(hold).await;
            world.with(|c| {
                c.kill(i);
                for k in ["LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"] {
                    c.unset_env(i, k);
                }
                c.spawn(i);
            });
        }
    }
    Fault {
        kind: kind.name().to_string(),
        target,
        start,
        end: ctx.rec.now(),
        detail,
    }
}

async fn nemesis(world: Arc<World>, ctx: Arc<Ctx>, seed: u64, kinds: Vec<Kind>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let busy: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_store_wipe = f64::NEG_INFINITY;
    let mut authority_wiped = false;
    let mut fired: BTreeSet<Kind> = BTreeSet::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    while ctx.rec.now() < ctx.load_end - 8.0 && !ctx.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..5000))).await;
        let now = ctx.rec.now();
        let weights: Vec<(Kind, u32)> = kinds
            .iter()
            .map(|k| {
                let w = match k {
                    Kind::Kill => 30,
                    Kind::Pause => 25,
                    Kind::Partition => 18,
                    Kind::WipeStore if now - last_store_wipe > 150.0 => 6,
                    Kind::WipeAuthority if !authority_wiped && now > ctx.load_end * 0.3 => 4,
                    Kind::DiskFull => 5,
                    Kind::Clock => 7,
                    _ => 0,
                };
                // Every kind early in the run, so that short runs see them all.
                (*k, if fired.contains(k) { w } else { w * 6 })
            })
            .collect();
        let total: u32 = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            continue;
        }
        let mut roll = rng.random_range(0..total);
        let kind = weights
            .iter()
            .find(|(_, w)| {
                if roll < *w {
                    true
                } else {
                    roll -= w;
                    false
                }
            })
            .map(|(k, _)| *k)
            .unwrap_or(Kind::Kill);
        let candidates: Vec<&str> = match kind {
            Kind::WipeStore | Kind::DiskFull => STORES.to_vec(),
            Kind::WipeAuthority => vec!["authority"],
            _ => NODES.to_vec(),
        };
        let free: Vec<&str> = {
            let b = busy.lock().unwrap();
            candidates.into_iter().filter(|n| !b.contains(*n)).collect()
        };
        // One wipe of the whole cluster's data at a time: never a store
        // wipe beside another fault on a store.
        if free.is_empty() || tasks.len() >= 2 {
            while tasks.len() >= 2 {
                tasks.join_next().await;
            }
            continue;
        }
        let target = free[rng.random_range(0..free.len())].to_string();
        let hold = Duration::from_millis(match kind {
            Kind::Kill => rng.random_range(1000..6000),
            Kind::Pause => rng.random_range(1000..4000),
            Kind::WipeStore | Kind::WipeAuthority => rng.random_range(1000..3000),
            Kind::Partition => rng.random_range(3000..10000),
            Kind::DiskFull => rng.random_range(10000..25000),
            Kind::Clock => rng.random_range(15000..30000),
        });
        match kind {
            Kind::WipeStore => last_store_wipe = now,
            Kind::WipeAuthority => authority_wiped = true,
            _ => {}
        }
        fired.insert(kind);
        // No fault outlives the load by much.
        let hold = hold.min(Duration::from_secs_f64((ctx.load_end - now).max(1.0)));
        busy.lock().unwrap().insert(target.clone());
        let (w, c, b, s) = (world.clone(), ctx.clone(), busy.clone(), rng.random());
        let overlap =
            rng.random_bool(0.35) && !matches!(kind, Kind::WipeStore | Kind::WipeAuthority);
        let t = target.clone();
        tasks.spawn(async move {
            let f = fault(w, c.clone(), kind, t.clone(), hold, s).await;
            eprintln!(
                "[{:7.1}s] {} {} ({:.1} s) {}",
                f.start,
                f.kind,
                f.target,
                f.end - f.start,
                f.detail
            );
            c.rec.faults.lock().unwrap().push(f);
            b.lock().unwrap().remove(&t);
        });
        if !overlap {
            while tasks.join_next().await.is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

// ---- the final phase ----------------------------------------------------

/// Which stores hold `content/ab/cd/<hash>.<ext>` on disk.
fn disk_scan(world: &World) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for s in STORES {
        let root = world.data_dirs[s].join("content");
        let Ok(l1) = std::fs::read_dir(&root) else {
            continue;
        };
        for a in l1.flatten() {
            let Ok(l2) = std::fs::read_dir(a.path()) else {
                continue;
            };
            for b in l2.flatten() {
                let Ok(l3) = std::fs::read_dir(b.path()) else {
                    continue;
                };
                for f in l3.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if let Some((hash, _)) = name.split_once('.') {
                        out.entry(hash.to_string())
                            .or_default()
                            .push((s.to_string(), world.zones[s].clone()));
                    }
                }
            }
        }
    }
    out
}

fn placed(copies: Option<&Vec<(String, String)>>) -> bool {
    let Some(c) = copies else { return false };
    let stores: BTreeSet<&str> = c.iter().map(|(s, _)| s.as_str()).collect();
    let zones: BTreeSet<&str> = c.iter().map(|(_, z)| z.as_str()).collect();
    stores.len() >= R && zones.len() >= R.min(2)
}

/// The hashes the checker will demand after the heal (the same rule).
fn final_live(ops: &[Op]) -> Vec<String> {
    let mut acked: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut dels: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in ops {
        match o.kind {
            OpKind::Upload { .. } if o.outcome.is(201) => acked.entry(&o.hash).or_default().push(o),
            OpKind::Delete if !matches!(o.outcome, Outcome::Status(400 | 401 | 403 | 422)) => {
                dels.entry(&o.hash).or_default().push(o)
            }
            _ => {}
        }
    }
    acked
        .iter()
        .filter(|(h, ups)| {
            let d = dels.get(*h).map_or(&[][..], |v| v);
            ups.iter().any(|u| d.iter().all(|x| x.end < u.start))
        })
        .map(|(h, _)| h.to_string())
        .collect()
}

async fn verify_all(ctx: Arc<Ctx>, hashes: Vec<String>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut set = tokio::task::JoinSet::new();
    for (k, h) in hashes.into_iter().enumerate() {
        let Some(b) = ctx.model.lock().unwrap().all.get(&h).cloned() else {
            continue;
        };
        let (ctx, sem) = (ctx.clone(), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await;
            let prism = PRISMS[k % 2];
            let (_, token) = ctx
                .purchase(2000, prism, &b, 3600, &[], 5, Phase::Final)
                .await;
            let Some(token) = token else { return };
            let t = Tok {
                token,
                blob: b,
                restricted: false,
            };
            for p in PRISMS {
                ctx.deliver(2000, p, &t, None, None, 5, Phase::Final).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

// ---- output -------------------------------------------------------------

fn print_report(
    r: &Report,
    h: &History,
    skipped: &[(String, String)],
    extra: &BTreeMap<String, String>,
) {
    println!("\n== operations by kind and answer");
    for (kind, by) in &r.ops {
        let total: usize = by.values().sum();
        let parts: Vec<String> = by.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!("  {kind:<9} {total:>7}   {}", parts.join(", "));
    }
    println!("\n== unavailable (503 / no answer) by kind");
    for kind in r.ops.keys() {
        println!(
            "  {kind:<9} 503: {:<6} no answer: {}",
            r.unavailable_503.get(kind).copied().unwrap_or(0),
            r.no_answer.get(kind).copied().unwrap_or(0)
        );
    }
    println!("\n== longest unavailability window per fault kind");
    for (fk, w) in &r.longest_unavailable {
        println!(
            "  {fk:<15} {:>6.1} s  ({}, {:.1}..{:.1} s)",
            w.secs, w.op_kind, w.start, w.end
        );
    }
    println!("\n== nemesis timeline ({} faults)", h.faults.len());
    let mut faults = h.faults.clone();
    faults.sort_by(|a, b| a.start.total_cmp(&b.start));
    for f in &faults {
        println!(
            "  {:>7.1}..{:>7.1} s  {:<15} {:<10} {}",
            f.start, f.end, f.kind, f.target, f.detail
        );
    }
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &faults {
        *count.entry(&f.kind).or_default() += 1;
    }
    println!("  by kind: {count:?}");
    for (k, why) in skipped {
        println!("  SKIPPED {k}: {why}");
    }
    println!("\n== after the heal");
    for (k, v) in extra {
        println!("  {k}: {v}");
    }
    println!("\n== violations: {}", r.violations.len());
    for (kind, n) in &r.violations_by_kind {
        let re = r.reuploaded_by_kind.get(kind).copied().unwrap_or(0);
        println!("  {kind}: {n} ({re} on content deleted and uploaded again)");
        let of = |re: bool| {
            r.violations
                .iter()
                .filter(move |v| &v.kind == kind && v.reuploaded == re)
                .take(2)
        };
        for v in of(false).chain(of(true)) {
            println!(
                "      e.g. {} at {:.1} s (op {:?}{}): {}",
                v.hash,
                v.at,
                v.op,
                if v.reuploaded { ", re-uploaded" } else { "" },
                v.detail
            );
        }
    }
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(args));
    std::process::exit(code);
}

fn default_bin() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.parent().map(|d| d.join("stretchfs")).unwrap_or_default()
}

async fn run(args: Args) -> i32 {
    let bin = args.bin.clone().unwrap_or_else(default_bin);
    if !bin.exists() {
        eprintln!(
            "no stretchfs binary at {} (build it: cargo build --release -p stretchfs, or pass --bin)",
            bin.display()
        );
        return 2;
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("stretchfs-nemesis-{}", std::process::id()))
    });
    let ip_of = |k: usize| -> Ipv4Addr {
        format!("{}.{}", args.net, k + 1)
            .parse()
            .unwrap_or(Ipv4Addr::new(127, 0, 77, (k + 1) as u8))
    };
    let ips: BTreeMap<String, Ipv4Addr> = NODES
        .iter()
        .enumerate()
        .map(|(k, n)| (n.to_string(), ip_of(k)))
        .collect();

    // What this machine allows.
    let machine = Machine::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut kinds = vec![
        Kind::Kill,
        Kind::Pause,
        Kind::WipeStore,
        Kind::WipeAuthority,
    ];
    let notes = faults::ensure_packages(&[("iptables", "iptables"), ("faketime", "faketime")]);
    for n in notes {
        eprintln!("setup: {n}");
    }
    match faults::probe_partitions(&machine, ip_of(249), ip_of(250)).await {
        Ok(()) => kinds.push(Kind::Partition),
        Err(e) => skipped.push(("partition".into(), e)),
    }
    match faults::probe_tmpfs(
        &machine,
        &std::env::temp_dir().join(format!("stretchfs-nemesis-probe-{}", std::process::id())),
    ) {
        Ok(()) => kinds.push(Kind::DiskFull),
        Err(e) => skipped.push(("disk_full".into(), e)),
    }
    let faketime = match faults::probe_faketime() {
        Ok(lib) => {
            kinds.push(Kind::Clock);
            Some(lib)
        }
        Err(e) => {
            skipped.push(("clock".into(), e));
            None
        }
    };
    kinds.retain(|k| {
        let off = args.without.iter().any(|w| w == k.name());
        if off {
            skipped.push((k.name().into(), "left out with --without".into()));
        }
        !off
    });
    for (k, why) in &skipped {
        eprintln!("nemesis {k} SKIPPED: {why}");
    }

    let url_ttl = args.url_ttl;
    let ips2 = ips.clone();
    let mut cluster = ProcCluster::prepare(&bin, &dir, &args.net, args.port, |m| {
        let ip = ips2[&m.name];
        m.cfg.listen = std::net::SocketAddr::from((ip, m.cfg.listen.port()));
        m.cfg.authority = std::net::SocketAddr::from((ips2["authority"], m.cfg.authority.port()));
        m.cfg.url_ttl_secs = url_ttl;
    });
    for (i, m) in cluster.members.clone().iter().enumerate() {
        cluster.set_env(
            i,
            stretchfs_transport_http::client::BIND_IP_ENV,
            &m.cfg.listen.ip().to_string(),
        );
    }
    // Another cluster on these addresses (another nemesis run, a test)
    // would answer our clients with its own key: refuse to start.
    for m in &cluster.members {
        if let Err(e) = std::net::TcpListener::bind(m.cfg.listen) {
            eprintln!(
                "{} ({}) is taken: {e}; another cluster runs there (choose --net or --port)",
                m.cfg.listen, m.name
            );
            return 2;
        }
    }
    let urls: BTreeMap<String, String> = cluster
        .members
        .iter()
        .map(|m| (m.name.clone(), format!("http://{}", m.cfg.listen)))
        .collect();
    let zones = cluster
        .members
        .iter()
        .map(|m| (m.name.clone(), m.cfg.zone.clone()))
        .collect();
    let data_dirs = cluster
        .members
        .iter()
        .map(|m| (m.name.clone(), m.cfg.data_dir.clone()))
        .collect();
    let api_key = cluster.secrets.api_key.clone();
    let api_key_check = api_key.clone();
    let world = Arc::new(World {
        cluster: Mutex::new(cluster),
        machine,
        ips,
        zones,
        data_dirs,
        faketime,
    });
    let guard = Guard(world.clone());
    {
        let w = world.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("\ninterrupted: killing every node and removing every rule and mount");
            w.cleanup();
            std::process::exit(130);
        });
    }
    world.with(|c| {
        for i in 0..c.members.len() {
            c.spawn(i);
        }
    });
    let ready_in = Instant::now();
    if let Err(e) = wait_ready(&urls, Duration::from_secs(60)).await {
        eprintln!("the cluster did not start: {e} (logs in {})", dir.display());
        drop(guard);
        return 2;
    }
    // Every node must be ours: it takes our API key.
    for (name, url) in &urls {
        let auth = format!("Bearer {api_key_check}");
        let r = call(
            hyper::Method::GET,
            &format!("{url}/v1/status"),
            &[("authorization", &auth)],
            empty(),
            Duration::from_secs(5),
        )
        .await;
        if !matches!(&r, Ok(r) if r.status == 200) {
            eprintln!(
                "{name} at {url} does not take this run's API key ({}): another cluster answers there",
                outcome(&r).label()
            );
            drop(guard);
            return 2;
        }
    }
    eprintln!(
        "cluster ready in {:.1} s on {}.1-6:{}; load for {} s with {} clients, seed {}; nemeses: {:?}",
        ready_in.elapsed().as_secs_f64(),
        args.net,
        args.port,
        args.secs,
        args.clients,
        args.seed,
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>()
    );
    let t0 = Instant::now();
    let wall0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let ctx = Arc::new(Ctx {
        rec: Rec {
            t0,
            ops: Mutex::default(),
            faults: Mutex::default(),
            next: AtomicU64::new(0),
        },
        urls,
        api_key,
        model: Mutex::default(),
        big_in_flight: AtomicBool::new(false),
        load_end: args.secs as f64,
        stop: AtomicBool::new(false),
        no_delete: args.no_delete,
    });

    let mut clients = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        clients.spawn(client_loop(ctx.clone(), c, args.seed));
    }
    let nem = tokio::spawn(nemesis(world.clone(), ctx.clone(), args.seed, kinds));
    let mut panicked = 0;
    while let Some(r) = clients.join_next().await {
        if r.is_err() {
            panicked += 1;
        }
    }
    if nem.await.is_err() {
        panicked += 1;
    }

    // Heal everything.
    eprintln!("[{:7.1}s] load over; healing", ctx.rec.now());
    world.machine.cleanup();
    world.with(|c| {
        for i in 0..c.members.len() {
            c.resume(i);
            if !c.running(i) {
                c.spawn(i);
            }
        }
    });
    let healed_at = ctx.rec.now();
    let ready = wait_ready(&ctx.urls, Duration::from_secs(60)).await;
    let mut extra = BTreeMap::new();
    extra.insert("ready after heal".to_string(), format!("{ready:.1?} s"));

    // Replication within the bound, read from the stores' disks.
    let live = final_live(&ctx.rec.ops.lock().unwrap());
    let bound = Duration::from_secs(args.heal_secs);
    let t = Instant::now();
    let mut disk = disk_scan(&world);
    loop {
        let short = live.iter().filter(|h| !placed(disk.get(*h))).count();
        if short == 0 || t.elapsed() > bound {
            extra.insert(
                "replication".to_string(),
                format!(
                    "{} of {} live hashes on R={R} stores in distinct zones {:.1} s after the heal (bound {} s)",
                    live.len() - short,
                    live.len(),
                    t.elapsed().as_secs_f64(),
                    args.heal_secs
                ),
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        disk = disk_scan(&world);
    }
    // Every live hash purchased and delivered through every prism.
    verify_all(ctx.clone(), live.clone()).await;
    extra.insert(
        "final verification".to_string(),
        format!("{:.1} s", ctx.rec.now() - healed_at),
    );
    if panicked > 0 {
        extra.insert("client tasks that panicked".into(), panicked.to_string());
    }

    let history = History {
        wall0,
        ops: std::mem::take(&mut *ctx.rec.ops.lock().unwrap()),
        faults: std::mem::take(&mut *ctx.rec.faults.lock().unwrap()),
        healed_at: Some(healed_at),
        disk: live
            .iter()
            .map(|h| DiskCopies {
                hash: h.clone(),
                stores: disk.get(h).cloned().unwrap_or_default(),
            })
            .collect(),
        prisms: PRISMS.iter().map(|s| s.to_string()).collect(),
        zones: world
            .zones
            .iter()
            .filter(|(n, _)| n.starts_with("store"))
            .map(|(_, z)| z.clone())
            .collect::<BTreeSet<_>>()
            .len(),
    };
    let params = Params {
        replicas: R,
        revocation_bound: url_ttl as f64 + 5.0,
        expiry_tolerance: 2.0,
    };
    let report = checker::check(&history, &params);
    print_report(&report, &history, &skipped, &extra);
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "args": args,
            "params": params,
            "report": report,
            "faults": history.faults,
            "skipped": skipped,
            "after_heal": extra,
        });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&j).unwrap_or_default()) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    if let Some(path) = &args.history {
        let lines: Vec<String> = history
            .ops
            .iter()
            .filter_map(|o| serde_json::to_string(o).ok())
            .collect();
        if let Err(e) = std::fs::write(path, lines.join("\n") + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    let bad = !report.violations.is_empty() || panicked > 0;
    drop(guard);
    if bad {
        eprintln!("violations found: logs and data kept in {}", dir.display());
        1
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        0
    }
}
