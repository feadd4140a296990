//! One running node: its driver task and its HTTP server, and an orderly
//! stop (leave the cluster, finish in-flight requests, stop the driver).

use crate::config::FileConfig;
use crate::runtime::{self, Shared, StartError};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Running {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
    driver: JoinHandle<Result<(), crate::metadata::MetaError>>,
    server: JoinHandle<()>,
    stop_server: oneshot::Sender<()>,
}

/// Binds the listen address, then starts the driver and the server.
pub async fn start(cfg: FileConfig) -> Result<Running, StartError> {
    let listen = cfg.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Io(format!("listen {listen}").into(), e))?;
    let (driver, shared) = runtime::open(cfg)?;
    let app = crate::http::router(shared.clone());
    let (stop_server, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, shared.clone(), app, stopped));
    let driver = tokio::spawn(driver.run());
    tracing::info!(addr = %listen, roles = ?shared.roles, "node started");
    Ok(Running {
        shared,
        addr: listen,
        driver,
        server,
        stop_server,
    })
}

impl Running {
    /// Leaves the cluster, lets in-flight requests finish (up to 10 s),
    /// then stops.
    pub async fn shutdown(self) {
        if let Err(e) = self.shared.leave() {
            tracing::error!(error = %e, "could not record the leave");
        }
        // Until the feed says we left (core resends the leave meanwhile),
        // at most a few seconds: a node gone without it is voted down.
        let leaving = Instant::now();
        while !self.shared.has_left() {
            if leaving.elapsed() > Duration::from_secs(5) {
                tracing::warn!(addr = %self.addr, "the leave was not recorded within 5 s; stopping anyway");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop_server.send(());
        if tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .is_err()
        {
            tracing::warn!(addr = %self.addr, "in-flight requests did not finish within 10 s");
        }
        self.driver.abort();
        tracing::info!(addr = %self.addr, "node stopped");
    }

    /// Waits until the driver ends by itself (a metadata write failed).
    pub async fn failed(&mut self) -> String {
        match (&mut self.driver).await {
            Ok(Ok(())) => "driver stopped".into(),
            Ok(Err(e)) => format!("stopping: {e}"),
            Err(e) => format!("driver task: {e}"),
        }
    }
}

/// HTTP/1.1 straight on hyper (no protocol sniffing: measurably faster than
/// `axum::serve` for small answers), Nagle off, and a graceful stop that
/// lets in-flight requests finish. Accepted connections are dealt round
/// robin to one single-threaded runtime per core, so a connection's work
/// never migrates between threads.
async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    app: axum::Router,
    stopped: oneshot::Receiver<()>,
) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut lanes = Vec::new();
    let mut finished = Vec::new();
    for i in 0..threads {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done, finish) = oneshot::channel::<()>();
        let (shared, app) = (shared.clone(), app.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || connection_lane(rx, shared, app, done));
        match spawned {
            Ok(_) => {
                lanes.push(tx);
                finished.push(finish);
            }
            Err(e) => tracing::error!(error = %e, "cannot start an HTTP thread"),
        }
    }
    if lanes.is_empty() {
        return;
    }
    tokio::pin!(stopped);
    let mut next = 0;
    loop {
        let sock = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // Out of descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let _ = sock.set_nodelay(true);
        if let Ok(std_sock) = sock.into_std() {
            let _ = lanes[next % lanes.len()].send(std_sock);
            next += 1;
        }
    }
    drop(listener);
    drop(lanes);
    for f in finished {
        let _ = f.await;
    }
}

/// One HTTP thread: serves the connections it is dealt until the channel
/// closes, then lets them finish.
fn connection_lane(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>,
    shared: Arc<Shared>,
    app: axum::Router,
    done: oneshot::Sender<()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start an HTTP runtime");
            return;
        }
    };
    rt.block_on(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        while let Some(std_sock) = rx.recv().await {
            let sock = match tokio::net::TcpStream::from_std(std_sock) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot adopt a connection");
                    continue;
                }
            };
            let routed = TowerToHyperService::new(app.clone());
            let shared = shared.clone();
            // Deliveries skip the router; everything else goes through it.
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let routed = routed.clone();
                let shared = shared.clone();
                async move {
                    if let Some(resp) = crate::http::deliver_direct(&shared, &req).await {
                        return Ok(resp);
                    }
                    hyper::service::Service::call(&routed, req).await
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(sock), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        graceful.shutdown().await;
    });
    let _ = done.send(());
}
