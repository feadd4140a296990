//! `stretchfs dev`: a whole local cluster in one process on loopback (one
//! authority, three stores in two zones, two prisms), data under one
//! directory, secrets generated once and kept there.

use crate::config::FileConfig;
use crate::http::random_key;
use crate::server::{self, Running};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const DEFAULT_DIR: &str = ".stretchfs-dev";
pub const BASE_PORT: u16 = 7400;

/// The dev cluster's identity, kept in `<dir>/dev.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevSecrets {
    pub cluster_id: String,
    pub cluster_secret: String,
    pub api_key: String,
}

impl DevSecrets {
    pub fn load(dir: &Path) -> Option<DevSecrets> {
        let text = std::fs::read_to_string(dir.join("dev.toml")).ok()?;
        toml::from_str(&text).ok()
    }

    fn load_or_create(dir: &Path) -> Result<DevSecrets, String> {
        if let Some(s) = DevSecrets::load(dir) {
            return Ok(s);
        }
        let s = DevSecrets::generate();
        let text = toml::to_string(&s).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("dev.toml"), text)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(s)
    }

    pub fn generate() -> DevSecrets {
        DevSecrets {
            cluster_id: random_key(),
            cluster_secret: random_key(),
            api_key: random_key(),
        }
    }
}

/// One node of a local cluster.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub cfg: FileConfig,
}

/// The layout of a local cluster: authority at `ip:port`, stores at
/// `port+1..=port+3` (zones a, a, b), prisms at `port+10`, `port+11`.
pub fn layout(dir: &Path, ip: &str, port: u16, secrets: &DevSecrets) -> Vec<Member> {
    let addr = |p: u16| -> SocketAddr {
        format!("{ip}:{p}")
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], p)))
    };
    let authority = addr(port);
    let member = |name: &str, p: u16, roles: &[&str], zone: &str| Member {
        name: name.to_string(),
        cfg: FileConfig {
            data_dir: dir.join(name),
            listen: addr(p),
            authority,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            zone: zone.to_string(),
            weight: 100,
            cluster_id: secrets.cluster_id.clone(),
            cluster_secret: secrets.cluster_secret.clone(),
            api_key: secrets.api_key.clone(),
            api_keys: Vec::new(),
            public_url: None,
            max_object_bytes: 5 << 30,
            proxy: false,
            url_ttl_secs: 60,
            replicas: 2,
            write_quorum: 2,
        },
    };
    vec![
        member("authority", port, &["authority"], "a"),
        member("store-1", port + 1, &["store"], "a"),
        member("store-2", port + 2, &["store"], "a"),
        member("store-3", port + 3, &["store"], "b"),
        member("prism-1", port + 10, &["prism"], "a"),
        member("prism-2", port + 11, &["prism"], "b"),
    ]
}

pub async fn run(dir: &Path, port: u16) -> Result<(), String> {
    let secrets = DevSecrets::load_or_create(dir)?;
    let members = layout(dir, "127.0.0.1", port, &secrets);
    let mut running: Vec<Running> = Vec::new();
    for m in &members {
        match server::start(m.cfg.clone()).await {
            Ok(r) => running.push(r),
            Err(e) => {
                for r in running {
                    r.shutdown().await;
                }
                return Err(format!("{}: {e}", m.name));
            }
        }
    }
    let started = Instant::now();
    while !running.iter().all(|r| r.shared.is_ready()) {
        if started.elapsed() > Duration::from_secs(30) {
            eprintln!("warning: the cluster is not ready after 30 s; see the log (RUST_LOG=info)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    print!("{}", banner(dir, &members, &secrets));
    crate::cli::shutdown_signal().await;
    eprintln!("stopping the cluster...");
    for r in running {
        r.shutdown().await;
    }
    Ok(())
}

fn banner(dir: &Path, members: &[Member], s: &DevSecrets) -> String {
    let list = |role: &str| -> String {
        members
            .iter()
            .filter(|m| m.cfg.roles.iter().any(|r| r == role))
            .map(|m| format!("http://{} ({}, zone {})", m.cfg.listen, m.name, m.cfg.zone))
            .collect::<Vec<_>>()
            .join("\n             ")
    };
    let prism = members
        .iter()
        .find(|m| m.name == "prism-1")
        .map(|m| format!("http://{}", m.cfg.listen))
        .unwrap_or_default();
    let prism2 = members
        .iter()
        .find(|m| m.name == "prism-2")
        .map(|m| format!("http://{}", m.cfg.listen))
        .unwrap_or_default();
    let data: PathBuf = dir.to_path_buf();
    format!(
        r#"StretchFS dev cluster is up (data in {data}; Ctrl-C stops it)

  authority  {authority}
  stores     {stores}
  prisms     {prisms}
  API key    {key}

Try it from another shell:

  export PRISM={prism} KEY={key}
  echo "hello, stretchfs" > hello.txt
  curl -s -X PUT -H "Authorization: Bearer $KEY" --data-binary @hello.txt "$PRISM/v1/content?ext=txt"; echo
  HASH=$(sha1sum hello.txt | cut -d' ' -f1)
  URL=$(curl -s -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d "{{\"hash\":\"$HASH\",\"ext\":\"txt\",\"life\":\"1h\"}}" "$PRISM/v1/purchases" \
        | sed 's/.*"url":"\([^"]*\)".*/\1/')
  echo "$URL"
  curl -sL "$URL"                                  # follows the redirect to a store
  curl -sL "${{URL/{p1port}/{p2port}}}"                      # the same purchase through the other prism

Or with the CLI: stretchfs upload hello.txt; stretchfs purchase $HASH; stretchfs status
"#,
        data = data.display(),
        authority = list("authority"),
        stores = list("store"),
        prisms = list("prism"),
        key = s.api_key,
        p1port = prism.rsplit(':').next().unwrap_or(""),
        p2port = prism2.rsplit(':').next().unwrap_or(""),
    )
}
