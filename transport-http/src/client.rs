//! The sending side: a pooled HTTP/1.1 client that signs every request.

use crate::auth::{body_digest, Signer};
use crate::MESSAGE_PATH;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stretchfs_core::{codec, Envelope, Transport};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// The environment variable naming the local address node-to-node
/// connections are bound to (unset: the system's choice).
pub const BIND_IP_ENV: &str = "STRETCHFS_BIND_IP";

/// Why a request to a peer did not succeed.
#[derive(Debug)]
pub enum SendError {
    TimedOut,
    Connect(String),
    /// The peer answered with a non-success status.
    Status(u16, String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TimedOut => write!(f, "timed out"),
            SendError::Connect(e) => write!(f, "{e}"),
            SendError::Status(s, body) => write!(f, "peer answered {s}: {body}"),
        }
    }
}

impl std::error::Error for SendError {}

pub fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A signing client shared by every task of a node.
pub struct HttpClient {
    client: Client<HttpConnector, Body>,
    signer: Arc<Signer>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(signer: Arc<Signer>, timeout: Duration) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        // Outgoing connections leave from 127.0.0.1 (or the routed address)
        // unless told otherwise; the nemesis binds each node's to its own
        // listen address so firewall rules can cut links between nodes.
        if let Some(ip) = std::env::var(BIND_IP_ENV)
            .ok()
            .and_then(|v| v.parse::<std::net::IpAddr>().ok())
        {
            connector.set_local_address(Some(ip));
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(connector);
        HttpClient {
            client,
            signer,
            timeout,
        }
    }

    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// Sends a signed request and returns the response, whatever its status.
    pub async fn request(
        &self,
        method: Method,
        to: SocketAddr,
        path: &str,
        digest: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        let nonce = rand::random::<u64>();
        let signed = self.signer.sign(
            method.as_str(),
            path,
            &to.to_string(),
            unix_secs(),
            nonce,
            digest,
        );
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{to}{path}"));
        for (name, value) in signed.pairs() {
            req = req.header(name, value);
        }
        let req = req
            .body(body)
            .map_err(|e| SendError::Connect(e.to_string()))?;
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(SendError::TimedOut),
            Ok(Err(e)) => Err(SendError::Connect(e.to_string())),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Posts one envelope to a peer's message endpoint.
    pub async fn post_message(&self, to: SocketAddr, env: &Envelope) -> Result<(), SendError> {
        let bytes = codec::encode(env);
        let digest = body_digest(&bytes);
        let resp = self
            .request(
                Method::POST,
                to,
                MESSAGE_PATH,
                &digest,
                full(bytes),
                self.timeout,
            )
            .await?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT || status.is_success() {
            return Ok(());
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Err(SendError::Status(status.as_u16(), body))
    }
}

/// The core `Transport` over HTTP: each envelope is posted by its own task
/// (best effort, like every core transport; core retries what matters).
#[derive(Clone)]
pub struct HttpTransport {
    client: Arc<HttpClient>,
}

impl HttpTransport {
    pub fn new(client: Arc<HttpClient>) -> HttpTransport {
        HttpTransport { client }
    }
}

impl Transport for HttpTransport {
    fn send(&mut self, to: SocketAddr, envelope: Envelope) {
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.post_message(to, &envelope).await {
                tracing::debug!(%to, kind = envelope.msg.kind(), error = %e, "message not delivered");
            }
        });
    }
}
