//! The command-line client: options, and `upload`, `purchase`, `status`
//! against a running cluster.

use crate::client::{call, empty, full, Reply};
use crate::status::NodeStatus;
use hyper::Method;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Opts {
    pub positional: Vec<String>,
    pub config: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub port: Option<u16>,
    pub prism: Option<String>,
    pub api_key: Option<String>,
    pub ext: Option<String>,
    pub life: Option<String>,
}

impl Opts {
    pub fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--config" => o.config = Some(value(a)?.into()),
                "--dir" => o.dir = Some(value(a)?.into()),
                "--port" => {
                    let v = value(a)?;
                    o.port = Some(
                        v.parse()
                            .map_err(|_| format!("--port {v:?} is not a port"))?,
                    );
                }
                "--prism" => o.prism = Some(value(a)?),
                "--api-key" => o.api_key = Some(value(a)?),
                "--ext" => o.ext = Some(value(a)?),
                "--life" => o.life = Some(value(a)?),
                s if s.starts_with("--") => return Err(format!("unknown option {s}")),
                _ => o.positional.push(a.clone()),
            }
        }
        Ok(o)
    }

    pub fn dir_or_default(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::dev::DEFAULT_DIR))
    }

    fn prism(&self) -> String {
        self.prism
            .clone()
            .or_else(|| std::env::var("STRETCHFS_PRISM").ok())
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", crate::dev::BASE_PORT + 10))
            .trim_end_matches('/')
            .to_string()
    }

    /// The API key: given, from the environment, or the dev cluster's.
    fn api_key(&self) -> Result<String, String> {
        if let Some(k) = self
            .api_key
            .clone()
            .or_else(|| std::env::var("STRETCHFS_API_KEY").ok())
        {
            return Ok(k);
        }
        crate::dev::DevSecrets::load(&self.dir_or_default())
            .map(|s| s.api_key)
            .ok_or_else(|| {
                "no API key: pass --api-key, set STRETCHFS_API_KEY, or run where `stretchfs dev` keeps its data".into()
            })
    }

    fn one(&self, what: &str) -> Result<&str, String> {
        match self.positional.as_slice() {
            [x] => Ok(x),
            _ => Err(format!("expected one {what}")),
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(120);

fn explain(r: &Reply) -> String {
    match r.json() {
        Ok(v) => match (v["error"]["code"].as_str(), v["error"]["message"].as_str()) {
            (Some(c), Some(m)) => format!("{} {c}: {m}", r.status),
            _ => format!("{} {}", r.status, r.text()),
        },
        Err(_) => format!("{} {}", r.status, r.text()),
    }
}

fn pretty(r: &Reply) -> Result<(), String> {
    if !(200..300).contains(&r.status) {
        return Err(explain(r));
    }
    let v = r.json()?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

pub async fn upload(o: &Opts) -> Result<(), String> {
    let file = Path::new(o.one("FILE")?);
    let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let ext = match &o.ext {
        Some(e) => e.clone(),
        None => file
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_string)
            .ok_or("the file has no extension: pass --ext")?,
    };
    let body = crate::runtime::file_body(file, 0, meta.len())
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let key = o.api_key()?;
    let auth = format!("Bearer {key}");
    let url = format!("{}/v1/content?ext={ext}", o.prism());
    let r = call(
        Method::PUT,
        &url,
        &[("authorization", &auth)],
        body,
        TIMEOUT,
    )
    .await?;
    pretty(&r)
}

pub async fn purchase(o: &Opts) -> Result<(), String> {
    let hash = o.one("HASH")?;
    let base = o.prism();
    let ext = match &o.ext {
        Some(e) => e.clone(),
        None => {
            let r = call(
                Method::GET,
                &format!("{base}/v1/content/{hash}"),
                &[],
                empty(),
                TIMEOUT,
            )
            .await?;
            if r.status != 200 {
                return Err(explain(&r));
            }
            r.json()?["ext"]
                .as_str()
                .ok_or("detail without ext")?
                .to_string()
        }
    };
    let life = o.life.clone().unwrap_or_else(|| "1h".into());
    let body = serde_json::json!({ "hash": hash, "ext": ext, "life": life });
    let key = o.api_key()?;
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = call(
        Method::POST,
        &format!("{base}/v1/purchases"),
        &headers,
        full(body.to_string()),
        TIMEOUT,
    )
    .await?;
    pretty(&r)
}

pub async fn status(o: &Opts) -> Result<(), String> {
    let key = o.api_key()?;
    let auth = format!("Bearer {key}");
    let r = call(
        Method::GET,
        &format!("{}/v1/status", o.prism()),
        &[("authorization", &auth)],
        empty(),
        TIMEOUT,
    )
    .await?;
    if r.status != 200 {
        return Err(explain(&r));
    }
    let s: NodeStatus = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    print!("{}", render_status(&s));
    Ok(())
}

pub fn render_status(s: &NodeStatus) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "cluster {}  (as seen by {} {}, {}; feed at {})\n\n",
        s.cluster.as_deref().unwrap_or("?"),
        s.roles.join("+"),
        s.addr,
        if s.ready { "ready" } else { "NOT ready" },
        s.feed_seq
    ));
    out.push_str(&format!(
        "{:<18} {:<22} {:<18} {:<8} {:<6} {:>7}\n",
        "node", "address", "roles", "zone", "health", "copies"
    ));
    for n in &s.nodes {
        let health = if n.down {
            "DOWN"
        } else if n.draining {
            "drain"
        } else {
            "up"
        };
        out.push_str(&format!(
            "{:<18} {:<22} {:<18} {:<8} {:<6} {:>7}\n",
            n.id,
            n.addr,
            n.roles.join("+"),
            n.zone,
            health,
            n.copies
        ));
    }
    out.push_str(&format!(
        "\ncontent: {} items, {} bytes; under-replicated (repair backlog): {}; purchases: {}\n",
        s.content.items, s.content.bytes, s.content.under_replicated, s.purchases
    ));
    out
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
