//! One running node: its driver task and its HTTP server, and an orderly
//! stop (leave the cluster, finish in-flight requests, stop the driver).

use crate::config::FileConfig;
use crate::runtime::{self, Cmd, Shared, StartError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Running {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
    driver: JoinHandle<Result<(), crate::metadata::MetaError>>,
    server: JoinHandle<std::io::Result<()>>,
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
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
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
        let (done, left) = oneshot::channel();
        if self.shared.cmd.send(Cmd::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), left).await;
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
