//! The tokio driver: owns one core `Node`, feeds it inputs (messages from
//! the HTTP server, client requests, timers, finished disk and transfer
//! work) and carries out its outputs (persist, send, transfer, list, scrub,
//! delete, reply). Every decision stays in core; this only does I/O.

use crate::config::FileConfig;
use crate::disk::ContentDir;
use crate::metadata::{Compaction, MetaError, MetadataStore, RedbStore};
use crate::status::NodeStatus;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant, SystemTime, UNIX_EPOCH};
use stretchfs_core::content::ContentMeta;
use stretchfs_core::hash::ContentHash;
use stretchfs_core::store::STORE_OP;
use stretchfs_core::{
    ClientRequest, ClientResponse, Input, Node, Notice, Output, Roles, Time, Transport, WallTime,
};
use stretchfs_transport_http::auth::STREAMED_BODY;
use stretchfs_transport_http::client::Body;
use stretchfs_transport_http::{HttpClient, HttpTransport, Signer};
use tokio::sync::{mpsc, oneshot};

/// Where stores accept copies (`PUT {CONTENT_PATH}/{hash}?ext=...`).
pub const CONTENT_PATH: &str = "/internal/v1/content";

/// Core's clock starts here so no deadline sits at zero.
const CLOCK_OFFSET_US: u64 = 1_000_000;

/// What the HTTP side asks of the driver.
pub enum Cmd {
    Input(Input),
    Client {
        request: ClientRequest,
        reply: oneshot::Sender<ClientResponse>,
    },
    Status(oneshot::Sender<NodeStatus>),
    /// Leave the cluster (answered once the leave is sent); the driver
    /// keeps running until it is dropped.
    Shutdown(oneshot::Sender<()>),
}

/// State the HTTP handlers share with the driver.
pub struct Shared {
    pub cfg: FileConfig,
    pub roles: Roles,
    pub signer: Arc<Signer>,
    pub client: Arc<HttpClient>,
    pub content: ContentDir,
    /// Prism: uploads spooled while they are placed, by hash.
    pub spool: Mutex<BTreeMap<ContentHash, (PathBuf, ContentMeta)>>,
    pub ready: AtomicBool,
    pub cmd: mpsc::UnboundedSender<Cmd>,
}

impl Shared {
    /// Asks core; `None` when the driver has stopped.
    pub async fn ask(&self, request: ClientRequest) -> Option<ClientResponse> {
        let (reply, rx) = oneshot::channel();
        self.cmd.send(Cmd::Client { request, reply }).ok()?;
        rx.await.ok()
    }

    pub async fn status(&self) -> Option<NodeStatus> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Status(tx)).ok()?;
        rx.await.ok()
    }

    pub fn input(&self, input: Input) {
        let _ = self.cmd.send(Cmd::Input(input));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Why a node could not start.
#[derive(Debug)]
pub enum StartError {
    Config(crate::config::ConfigError),
    Meta(MetaError),
    Io(PathBuf, std::io::Error),
    Core(stretchfs_core::ConfigError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Meta(e) => write!(f, "{e}"),
            StartError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            StartError::Core(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Core's randomness in production: a CSPRNG seeded by the OS (purchase
/// tokens must be unguessable).
struct OsRng(rand::rngs::StdRng);

impl stretchfs_core::Rng for OsRng {
    fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
}

pub struct Driver {
    node: Node,
    meta: Box<dyn MetadataStore>,
    transport: HttpTransport,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    start: Instant,
    next_client: u64,
    pending: BTreeMap<u64, oneshot::Sender<ClientResponse>>,
    persist: Vec<Output>,
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |e| StartError::Io(p.to_path_buf(), e)
}

/// Opens the data directory and builds the node (not yet running).
pub fn open(cfg: FileConfig) -> Result<(Driver, Arc<Shared>), StartError> {
    let dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let meta = RedbStore::open(&dir.join("meta.redb")).map_err(StartError::Meta)?;
    let disk = meta.load().map_err(StartError::Meta)?;
    let content = ContentDir::open(&dir).map_err(io_err(&dir))?;
    let roles = cfg.roles().map_err(StartError::Config)?;
    let node_cfg = cfg.node_config().map_err(StartError::Config)?;
    let cluster = cfg.cluster().map_err(StartError::Config)?;
    let signer = Arc::new(Signer::new(cluster, cfg.cluster_secret.as_bytes(), 30));
    let client = Arc::new(HttpClient::new(signer.clone(), StdDuration::from_secs(2)));
    let start = Instant::now();
    let rng: rand::rngs::StdRng = rand::SeedableRng::from_os_rng();
    let node = Node::new(
        node_cfg,
        &disk,
        Box::new(OsRng(rng)),
        Time::from_micros(CLOCK_OFFSET_US),
    )
    .map_err(StartError::Core)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        cfg,
        roles,
        signer,
        client: client.clone(),
        content,
        spool: Mutex::new(BTreeMap::new()),
        ready: AtomicBool::new(false),
        cmd: tx,
    });
    let driver = Driver {
        node,
        meta: Box::new(meta),
        transport: HttpTransport::new(client),
        shared: shared.clone(),
        rx,
        start,
        next_client: 0,
        pending: BTreeMap::new(),
        persist: Vec::new(),
    };
    Ok((driver, shared))
}

fn wall_now() -> WallTime {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    WallTime::from_micros(us)
}

impl Driver {
    fn now(&self) -> Time {
        Time::from_micros(self.start.elapsed().as_micros() as u64 + CLOCK_OFFSET_US)
    }

    fn instant_of(&self, t: Time) -> tokio::time::Instant {
        let us = t.as_micros().saturating_sub(CLOCK_OFFSET_US);
        (self.start + StdDuration::from_micros(us)).into()
    }

    fn handle(&mut self, input: Input) {
        let (now, wall) = (self.now(), wall_now());
        self.node.handle(now, wall, input);
    }

    /// Runs until shut down. A metadata write that fails stops the node:
    /// it must not go on acknowledging what it could not keep.
    pub async fn run(mut self) -> Result<(), MetaError> {
        self.flush()?;
        loop {
            let deadline = self
                .node
                .poll_timeout()
                .map(|t| self.instant_of(t))
                .unwrap_or_else(|| tokio::time::Instant::now() + StdDuration::from_secs(3600));
            tokio::select! {
                biased;
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    let mut stop = self.command(cmd);
                    // Take what else is queued before writing and sending:
                    // one metadata transaction for the batch.
                    for _ in 0..256 {
                        if stop.is_some() {
                            break;
                        }
                        match self.rx.try_recv() {
                            Ok(cmd) => stop = self.command(cmd),
                            Err(_) => break,
                        }
                    }
                    self.flush()?;
                    if let Some(done) = stop {
                        // The leave is on its way; keep serving in-flight
                        // requests until the server has drained.
                        let _ = done.send(());
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.handle(Input::Tick);
                    self.flush()?;
                }
            }
        }
    }

    fn command(&mut self, cmd: Cmd) -> Option<oneshot::Sender<()>> {
        match cmd {
            Cmd::Input(input) => self.handle(input),
            Cmd::Client { request, reply } => {
                self.next_client += 1;
                let id = self.next_client;
                self.pending.insert(id, reply);
                self.handle(Input::Client { id, request });
            }
            Cmd::Status(tx) => {
                let _ = tx.send(NodeStatus::of(&self.node, &self.shared.cfg));
            }
            Cmd::Shutdown(done) => {
                self.handle(Input::Leave);
                return Some(done);
            }
        }
        None
    }

    /// Carries out every output: records first (one durable transaction),
    /// then everything that may depend on them.
    fn flush(&mut self) -> Result<(), MetaError> {
        let mut rest = Vec::new();
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Persist(_) => self.persist.push(out),
                other => rest.push(other),
            }
        }
        if !self.persist.is_empty() {
            let records: Vec<_> = self
                .persist
                .drain(..)
                .filter_map(|o| match o {
                    Output::Persist(r) => Some(r),
                    _ => None,
                })
                .collect();
            let compaction = self.node.authority().map(|a| Compaction {
                head: a.head(),
                state: a.state(),
            });
            let meta = &mut self.meta;
            tokio::task::block_in_place(|| meta.write(&records, compaction))?;
        }
        for out in rest {
            self.perform(out);
        }
        Ok(())
    }

    fn perform(&mut self, out: Output) {
        match out {
            Output::Persist(_) => {}
            Output::Send { to, envelope } => self.transport.send(to, envelope),
            Output::Notice(n) => self.notice(n),
            Output::Reply { id, response } => {
                if let Some(tx) = self.pending.remove(&id) {
                    let _ = tx.send(response);
                }
            }
            Output::Transfer {
                op,
                hash,
                to,
                to_addr,
            } => {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    let result = transfer(&shared, op, hash, to_addr).await;
                    if let Err(e) = &result {
                        tracing::warn!(%hash, store = %to, error = %e, "transfer failed");
                    }
                    shared.input(Input::TransferDone {
                        op,
                        ok: result.is_ok(),
                    });
                });
            }
            Output::ListContent => {
                let shared = self.shared.clone();
                tokio::task::spawn_blocking(move || {
                    let items = shared.content.list();
                    shared.input(Input::ContentListing(items));
                });
            }
            Output::Scrub { hash } => {
                let shared = self.shared.clone();
                tokio::task::spawn_blocking(move || {
                    let ok = shared.content.verify(&hash);
                    if !ok {
                        tracing::warn!(%hash, "scrub: stored copy is damaged or missing");
                    }
                    shared.input(Input::ScrubResult { hash, ok });
                });
            }
            Output::DeleteContent { hash } => {
                let shared = self.shared.clone();
                tokio::task::spawn_blocking(move || shared.content.delete(&hash));
            }
        }
    }

    fn notice(&mut self, n: Notice) {
        match n {
            Notice::Joined { cluster } => {
                tracing::info!(node = %self.node.id(), %cluster, "joined");
            }
            Notice::Ready => {
                self.shared.ready.store(true, Ordering::Relaxed);
                tracing::info!(node = %self.node.id(), "ready: snapshot taken and caught up");
            }
            Notice::VerdictPublished { node, down } => {
                tracing::info!(%node, down, "verdict published");
            }
            Notice::VerdictApplied { node, down } => {
                tracing::debug!(%node, down, "verdict applied");
            }
            Notice::Recovered => tracing::info!("authority state recovered"),
            Notice::Dropped { from, why } => {
                tracing::warn!(%from, ?why, "message dropped");
            }
            Notice::Suspicion { node, suspect } => tracing::debug!(%node, suspect, "suspicion"),
            Notice::VoteCast { subject, down } => tracing::debug!(%subject, down, "vote"),
        }
        // Readiness can be lost (a new authority log): follow core.
        self.shared
            .ready
            .store(self.node.is_ready(), Ordering::Relaxed);
    }
}

/// Why a copy to a store failed.
#[derive(Debug)]
enum TransferError {
    NoSource,
    Io(std::io::Error),
    Send(stretchfs_transport_http::SendError),
    Refused(u16),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NoSource => write!(f, "no local copy to send"),
            TransferError::Io(e) => write!(f, "reading the local copy: {e}"),
            TransferError::Send(e) => write!(f, "{e}"),
            TransferError::Refused(s) => write!(f, "store answered {s}"),
        }
    }
}

/// Copies a spooled upload (prism) or a stored copy (store clone job) to a
/// store, which answers only once its copy is verified and durable.
async fn transfer(
    shared: &Shared,
    op: u64,
    hash: ContentHash,
    to: std::net::SocketAddr,
) -> Result<(), TransferError> {
    let source = if op & STORE_OP != 0 {
        shared.content.find(&hash)
    } else {
        let spool = shared.spool.lock().unwrap_or_else(|e| e.into_inner());
        spool.get(&hash).cloned()
    };
    let (path, meta) = source.ok_or(TransferError::NoSource)?;
    let body = file_body(&path, 0, meta.size)
        .await
        .map_err(TransferError::Io)?;
    let target = format!("{CONTENT_PATH}/{hash}?ext={}", meta.ext);
    // Generous: the store hashes and fsyncs before it answers.
    let timeout = StdDuration::from_secs(30) + StdDuration::from_micros(meta.size / 20);
    let resp = shared
        .client
        .request(Method::PUT, to, &target, STREAMED_BODY, body, timeout)
        .await
        .map_err(TransferError::Send)?;
    let status = resp.status();
    // Drain so the connection goes back to the pool.
    let _ = resp.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(TransferError::Refused(status.as_u16()))
    }
}

/// A file's bytes `[from, from + len)` as a streamed body.
pub async fn file_body(path: &Path, from: u64, len: u64) -> std::io::Result<Body> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    if from > 0 {
        file.seek(std::io::SeekFrom::Start(from)).await?;
    }
    const CHUNK: u64 = 256 * 1024;
    let stream = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; left.min(CHUNK) as usize];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shorter than expected",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    Ok(BodyExt::boxed(StreamBody::new(
        stream.map(|r| r.map(Frame::data)),
    )))
}
