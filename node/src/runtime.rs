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
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant, SystemTime, UNIX_EPOCH};
use stretchfs_core::content::{ContentMeta, Ext};
use stretchfs_core::hash::ContentHash;
use stretchfs_core::{
    ClientRequest, ClientResponse, Input, Node, Notice, Output, Roles, Time, TransferSource,
    Transport, WallTime,
};
use stretchfs_transport_http::auth::STREAMED_BODY;
use stretchfs_transport_http::client::Body;
use stretchfs_transport_http::{HttpClient, HttpTransport, Signer};
use tokio::sync::{mpsc, oneshot};

/// Where stores accept copies (`PUT {CONTENT_PATH}/{hash}?ext=...`).
pub const CONTENT_PATH: &str = "/internal/v1/content";

/// Core's clock starts here so no deadline sits at zero.
const CLOCK_OFFSET_US: u64 = 1_000_000;

/// What the HTTP side and background work hand to the driver.
pub enum Cmd {
    Input(Input),
    /// A metadata write failed on a request's task: stop.
    Fatal(MetaError),
}

/// Signed delivery URLs by (store, content): (expiry, extension, URL).
pub type SignedUrls =
    BTreeMap<(stretchfs_core::NodeId, std::net::SocketAddr, ContentHash), (i64, String, String)>;

/// State the HTTP handlers share with the driver.
/// See `Shared::message_bytes`: eight of the largest messages at once.
pub const MESSAGE_BYTES_IN_FLIGHT: usize = 8 * stretchfs_transport_http::MAX_ENVELOPE_BYTES;

pub struct Shared {
    pub cfg: FileConfig,
    /// This node's id: a store serves only URLs signed for it (a wiped
    /// store back on the same address is another store).
    pub node_id: stretchfs_core::NodeId,
    pub roles: Roles,
    /// `listen` as peers sign it: requests signed for another address are
    /// refused.
    pub me: String,
    pub signer: Arc<Signer>,
    pub client: Arc<HttpClient>,
    pub content: Arc<ContentDir>,
    /// Prism: uploads spooled while they are placed, by hash.
    pub spool: Mutex<BTreeMap<ContentHash, (PathBuf, ContentMeta)>>,
    pub cmd: mpsc::UnboundedSender<Cmd>,
    /// Prism: recently signed delivery URLs, by store and content.
    pub signed_urls: Mutex<SignedUrls>,
    clock_offset_us: Arc<std::sync::atomic::AtomicI64>,
    core: Mutex<Core>,
    transport: HttpTransport,
    /// Tells the driver its next deadline may have moved.
    wake: tokio::sync::Notify,
    /// Bytes of node message bodies being read, at most
    /// `MESSAGE_BYTES_IN_FLIGHT`: a body is read before its MAC can be
    /// checked, so this bounds what unauthenticated senders can make the
    /// node hold at once, however many connections they open.
    pub message_bytes: tokio::sync::Semaphore,
}

impl Shared {
    /// Unix seconds by the cluster's clock (see core's `cluster_clock`):
    /// what signed URLs are stamped and checked with, so that one node's
    /// wrong clock does not expire every URL it signs or checks.
    pub fn cluster_unix_secs(&self) -> i64 {
        let off = self
            .clock_offset_us
            .load(std::sync::atomic::Ordering::Relaxed);
        stretchfs_transport_http::client::unix_secs() + off.div_euclid(1_000_000)
    }

    pub fn status(&self) -> NodeStatus {
        NodeStatus::of(&self.lock().node, &self.cfg)
    }

    /// Queued for the driver, which takes inputs in batches.
    pub fn input(&self, input: Input) {
        let _ = self.cmd.send(Cmd::Input(input));
    }

    /// Puts a staged copy in place (`None`: notes the copy already there)
    /// and tells core, both under the core lock, so a delete core ordered
    /// before this copy arrived cannot remove it, nor one ordered after
    /// miss it.
    pub fn commit_copy(
        self: &Arc<Self>,
        staged: Option<&crate::disk::Written>,
        hash: ContentHash,
        ext: Ext,
    ) -> std::io::Result<ContentMeta> {
        let mut rest = Vec::new();
        let meta = {
            let mut core = self.lock();
            let meta = match staged {
                Some(w) => {
                    self.content.commit(w, &ext)?;
                    ContentMeta { ext, size: w.size }
                }
                None => match self.content.find(&hash) {
                    Some((_, meta)) => meta,
                    None => return Err(std::io::ErrorKind::NotFound.into()),
                },
            };
            core.handle(Input::ContentStored { hash, meta });
            if let Err(e) = core.drain(None, &mut rest) {
                tracing::error!(error = %e, "metadata write failed; stopping");
                let _ = self.cmd.send(Cmd::Fatal(e));
            }
            meta
        };
        self.perform(&mut rest);
        Ok(meta)
    }

    /// Core's own answer: a snapshot taken and caught up with the feed.
    pub fn is_ready(&self) -> bool {
        self.lock().node.is_ready()
    }

    /// Whether the cluster has recorded this node's leave (see
    /// `Node::has_left`).
    pub fn has_left(&self) -> bool {
        self.lock().node.has_left()
    }

    /// Tells the authority this node is leaving; the node keeps serving
    /// in-flight requests until it is dropped.
    pub fn leave(self: &Arc<Self>) -> Result<(), MetaError> {
        let mut rest = Vec::new();
        {
            let mut core = self.lock();
            core.handle(Input::Leave);
            core.drain(None, &mut rest)?;
        }
        self.perform(&mut rest);
        Ok(())
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

/// The node and what must change with it under one lock: the driver task
/// takes it for messages and timers (batched, one metadata transaction per
/// batch), client requests take it directly so an answer core can give at
/// once costs no task hop (as quinn's connections do).
pub struct Core {
    node: Node,
    meta: Box<dyn MetadataStore>,
    /// Deletes run here, under the core lock, in the order core decided
    /// them relative to new copies (see `Shared::commit_copy`).
    content: Arc<ContentDir>,
    start: Instant,
    /// The cluster clock's offset from ours, for the HTTP layer (signed
    /// URLs) without taking this lock.
    clock_offset_us: Arc<std::sync::atomic::AtomicI64>,
    next_client: u64,
    pending: BTreeMap<u64, oneshot::Sender<ClientResponse>>,
    /// A metadata write failed: the node is stopping, and nothing after it
    /// may be written (the log would have a hole) or sent (it would speak
    /// of records that are not durable).
    failed: bool,
}

impl Core {
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
        self.clock_offset_us.store(
            self.node.clock_offset_us(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Writes the records core asked for (one durable transaction, before
    /// anything that follows them leaves), answers waiting clients, and
    /// returns the rest to carry out after the lock is released. The reply
    /// to `mine` is returned instead of being sent.
    fn drain(
        &mut self,
        mine: Option<u64>,
        rest: &mut Vec<Output>,
    ) -> Result<Option<ClientResponse>, MetaError> {
        if self.failed {
            return Err(MetaError::Db("an earlier metadata write failed".into()));
        }
        let mut records = Vec::new();
        let mut answer = None;
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Persist(r) => records.push(r),
                Output::Reply { id, response } if Some(id) == mine => answer = Some(response),
                // At once, under the lock: a copy received later must not
                // be deleted by an order given before it arrived.
                Output::DeleteContent { hash } => self.content.delete(&hash),
                other => rest.push(other),
            }
        }
        if !records.is_empty() {
            let compaction = self.node.authority().map(|a| Compaction {
                head: a.head(),
                state: a.state(),
            });
            let meta = &mut self.meta;
            // Off the async worker where the runtime allows it; the HTTP
            // threads' single-threaded runtimes just block briefly.
            let multi = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            let written = if multi {
                tokio::task::block_in_place(|| meta.write(&records, compaction))
            } else {
                meta.write(&records, compaction)
            };
            if let Err(e) = written {
                self.failed = true;
                rest.clear();
                return Err(e);
            }
        }
        // Replies go out only now, after the records they may depend on.
        rest.retain_mut(|o| match o {
            Output::Reply { id, response } => {
                if let Some(tx) = self.pending.remove(id) {
                    let _ = tx.send(response.clone());
                }
                false
            }
            _ => true,
        });
        Ok(answer)
    }
}

pub struct Driver {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Cmd>,
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |e| StartError::Io(p.to_path_buf(), e)
}

/// Opens the data directory and builds the node (not yet running).
pub fn open(cfg: FileConfig) -> Result<(Driver, Arc<Shared>), StartError> {
    let dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let loading = Instant::now();
    let meta = RedbStore::open(&dir.join("meta.redb")).map_err(StartError::Meta)?;
    let disk = meta.load().map_err(StartError::Meta)?;
    if let Some(a) = &disk.authority {
        // A restart's cost is what it reads: say what and how long.
        tracing::info!(
            records = a.state.records(),
            log_head = a.log.head(),
            elapsed_ms = loading.elapsed().as_millis() as u64,
            "authority metadata loaded"
        );
    }
    let content = Arc::new(ContentDir::open(&dir).map_err(io_err(&dir))?);
    let roles = cfg.roles().map_err(StartError::Config)?;
    let node_cfg = cfg.node_config().map_err(StartError::Config)?;
    let cluster = cfg.cluster().map_err(StartError::Config)?;
    let signer = Arc::new(Signer::new(cluster, cfg.cluster_secret.as_bytes(), 30));
    let client = Arc::new(HttpClient::new(signer.clone(), StdDuration::from_secs(2)));
    let rng: rand::rngs::StdRng = rand::SeedableRng::from_os_rng();
    let node = Node::new(
        node_cfg,
        &disk,
        Box::new(OsRng(rng)),
        Time::from_micros(CLOCK_OFFSET_US),
    )
    .map_err(StartError::Core)?;
    let clock_offset_us = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let core = Core {
        node,
        meta: Box::new(meta),
        content: content.clone(),
        start: Instant::now(),
        clock_offset_us: clock_offset_us.clone(),
        next_client: 0,
        pending: BTreeMap::new(),
        failed: false,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        node_id: core.node.id(),
        me: cfg.listen.to_string(),
        cfg,
        roles,
        signer,
        client: client.clone(),
        content,
        spool: Mutex::new(BTreeMap::new()),
        cmd: tx,
        signed_urls: Mutex::new(BTreeMap::new()),
        clock_offset_us,
        core: Mutex::new(core),
        transport: HttpTransport::new(client),
        wake: tokio::sync::Notify::new(),
        message_bytes: tokio::sync::Semaphore::new(MESSAGE_BYTES_IN_FLIGHT),
    });
    let driver = Driver {
        shared: shared.clone(),
        rx,
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
    /// Runs until shut down. A metadata write that fails stops the node:
    /// it must not go on acknowledging what it could not keep.
    pub async fn run(mut self) -> Result<(), MetaError> {
        let shared = self.shared.clone();
        let mut rest = Vec::new();
        shared.lock().drain(None, &mut rest)?;
        shared.perform(&mut rest);
        loop {
            let deadline = {
                let core = shared.lock();
                core.node
                    .poll_timeout()
                    .map(|t| core.instant_of(t))
                    .unwrap_or_else(|| tokio::time::Instant::now() + StdDuration::from_secs(3600))
            };
            tokio::select! {
                biased;
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    {
                        let mut core = shared.lock();
                        let mut cmd = Some(cmd);
                        // Take what else is queued: one metadata transaction
                        // for the batch.
                        for _ in 0..256 {
                            match cmd.take().or_else(|| self.rx.try_recv().ok()) {
                                Some(Cmd::Input(input)) => core.handle(input),
                                Some(Cmd::Fatal(e)) => return Err(e),
                                None => break,
                            }
                        }
                        core.drain(None, &mut rest)?;
                    }
                    shared.perform(&mut rest);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let mut core = shared.lock();
                    core.handle(Input::Tick);
                    core.drain(None, &mut rest)?;
                    drop(core);
                    shared.perform(&mut rest);
                }
                // A client request moved the next deadline.
                _ = shared.wake.notified() => {}
            }
        }
    }
}

impl Shared {
    /// Core's lock. A panic while it was held left core half-changed: the
    /// node stops rather than go on from a state no test has seen (it
    /// restarts from its durable records).
    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        match self.core.lock() {
            Ok(core) => core,
            Err(_) => {
                // In `stretchfs dev` the other nodes of the process stop too:
                // a bug in core is no state to carry on in.
                tracing::error!(node = %self.node_id, listen = %self.cfg.listen,
                    "core panicked while handling an input: stopping the process");
                std::process::exit(70)
            }
        }
    }

    /// Hands a client request to core on the caller's task; waits only if
    /// core cannot answer at once (it asks the authority first).
    pub async fn ask(self: &Arc<Self>, request: ClientRequest) -> Option<ClientResponse> {
        let mut rest = Vec::new();
        let waiting = {
            let mut core = self.lock();
            core.next_client += 1;
            let id = core.next_client;
            let before = core.node.poll_timeout();
            core.handle(Input::Client { id, request });
            let after = core.node.poll_timeout();
            if after.is_some() && (before.is_none() || after < before) {
                self.wake.notify_one();
            }
            match core.drain(Some(id), &mut rest) {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) => {
                    let (tx, rx) = oneshot::channel();
                    core.pending.insert(id, tx);
                    Err(Some(rx))
                }
                Err(e) => {
                    tracing::error!(error = %e, "metadata write failed; stopping");
                    let _ = self.cmd.send(Cmd::Fatal(e));
                    Err(None)
                }
            }
        };
        self.perform(&mut rest);
        match waiting {
            Ok(answer) => Some(answer),
            Err(Some(rx)) => rx.await.ok(),
            Err(None) => None,
        }
    }

    /// Carries out what core asked for (outside the lock).
    fn perform(self: &Arc<Self>, outs: &mut Vec<Output>) {
        for out in outs.drain(..) {
            match out {
                Output::Persist(_) | Output::Reply { .. } => {}
                Output::Send { to, envelope } => self.transport.clone().send(to, envelope),
                Output::Notice(n) => self.notice(n),
                Output::Transfer {
                    op,
                    hash,
                    to,
                    to_addr,
                    source,
                    timeout,
                } => {
                    let shared = self.clone();
                    tokio::spawn(async move {
                        let timeout = StdDuration::from_micros(timeout.as_micros() as u64);
                        let result = transfer(&shared, hash, to_addr, source, timeout).await;
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
                    let shared = self.clone();
                    tokio::task::spawn_blocking(move || {
                        let items = shared.content.list();
                        shared.input(Input::ContentListing(items));
                    });
                }
                Output::Scrub { hash } => {
                    let shared = self.clone();
                    tokio::task::spawn_blocking(move || {
                        let ok = shared.content.verify(&hash);
                        if !ok {
                            tracing::warn!(%hash, "scrub: stored copy is damaged or missing");
                        }
                        shared.input(Input::ScrubResult { hash, ok });
                    });
                }
                // Done in `Core::drain`, under the lock.
                Output::DeleteContent { .. } => {}
            }
        }
    }

    fn notice(&self, n: Notice) {
        match n {
            Notice::Joined { cluster } => tracing::info!(%cluster, "joined"),
            Notice::Ready => tracing::info!("ready: snapshot taken and caught up"),
            Notice::VerdictPublished { node, down } => {
                tracing::info!(%node, down, "verdict published")
            }
            Notice::VerdictApplied { node, down } => {
                tracing::debug!(%node, down, "verdict applied")
            }
            Notice::Recovered => tracing::info!("authority state recovered"),
            Notice::Removed => tracing::error!(
                "an admin removed this node from the cluster: it is idle now; \
                 restart it to join as a new member, or stop it for good"
            ),
            Notice::Left { node } => tracing::info!(%node, "left the cluster"),
            Notice::Dropped { from, why } => tracing::warn!(%from, ?why, "message dropped"),
            Notice::Suspicion { node, suspect } => tracing::debug!(%node, suspect, "suspicion"),
            Notice::VoteCast { subject, down } => tracing::debug!(%subject, down, "vote"),
        }
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
    hash: ContentHash,
    to: std::net::SocketAddr,
    source: TransferSource,
    timeout: StdDuration,
) -> Result<(), TransferError> {
    let source = match source {
        TransferSource::Stored => shared.content.find(&hash),
        TransferSource::Spool => {
            let spool = shared.spool.lock().unwrap_or_else(|e| e.into_inner());
            spool.get(&hash).cloned()
        }
    };
    let (path, meta) = source.ok_or(TransferError::NoSource)?;
    let body = file_body(&path, 0, meta.size)
        .await
        .map_err(TransferError::Io)?;
    let target = format!("{CONTENT_PATH}/{hash}?ext={}", meta.ext);
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
