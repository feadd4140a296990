//! Node configuration: a TOML file, every key overridable from the
//! environment (`STRETCHFS_LISTEN`, `STRETCHFS_ROLES=store,prism`, ...).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use stretchfs_core::{ClusterId, NodeConfig, Roles, Zone};

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Holds the node id, metadata database and content.
    pub data_dir: PathBuf,
    /// The address this node listens on and other nodes reach it at.
    pub listen: SocketAddr,
    /// The authority's address (equal to `listen` on the authority).
    pub authority: SocketAddr,
    /// Any of "authority", "store", "prism".
    pub roles: Vec<String>,
    #[serde(default = "default_zone")]
    pub zone: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// 32 hex digits, the same on every node.
    pub cluster_id: String,
    /// Shared by every node; signs node-to-node requests and delivery URLs.
    pub cluster_secret: String,
    /// Clients send it as `Authorization: Bearer ...` for writes and admin.
    pub api_key: String,
    /// More keys accepted besides `api_key`, so a key can be rotated: add
    /// the new one here, move the clients, then make it `api_key`.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Where clients reach this prism (purchase URLs start with it);
    /// `http://<listen>` if unset. Never taken from a request's `Host`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The largest object an upload may carry; larger ones get 413 and
    /// nothing is kept.
    #[serde(default = "default_max_object")]
    pub max_object_bytes: u64,
    /// Prisms stream content themselves instead of redirecting.
    #[serde(default)]
    pub proxy: bool,
    /// Lifetime of a signed delivery URL, which bounds revocation.
    #[serde(default = "default_url_ttl")]
    pub url_ttl_secs: u64,
    /// Copies per content (R) and durable copies before an upload is
    /// acknowledged (W).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    #[serde(default = "default_replicas")]
    pub write_quorum: usize,
}

fn default_zone() -> String {
    "default".into()
}
fn default_weight() -> u32 {
    100
}
fn default_url_ttl() -> u64 {
    60
}
fn default_replicas() -> usize {
    2
}
fn default_max_object() -> u64 {
    // S3's largest single PUT.
    5 << 30
}

/// The longest delivery URL lifetime: it bounds how long a revoked
/// purchase keeps delivering, and stays far from overflowing `i64`.
pub const MAX_URL_TTL_SECS: u64 = 7 * 24 * 3600;

/// Secrets are never printed, not even in a debug dump of the config.
impl fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REDACTED: &str = "<redacted>";
        f.debug_struct("FileConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("authority", &self.authority)
            .field("roles", &self.roles)
            .field("zone", &self.zone)
            .field("weight", &self.weight)
            .field("cluster_id", &self.cluster_id)
            .field("cluster_secret", &REDACTED)
            .field("api_key", &REDACTED)
            .field("api_keys", &vec![REDACTED; self.api_keys.len()])
            .field("public_url", &self.public_url)
            .field("max_object_bytes", &self.max_object_bytes)
            .field("proxy", &self.proxy)
            .field("url_ttl_secs", &self.url_ttl_secs)
            .field("replicas", &self.replicas)
            .field("write_quorum", &self.write_quorum)
            .finish()
    }
}

/// A configuration this node cannot run with.
#[derive(Debug)]
pub enum ConfigError {
    Read(PathBuf, std::io::Error),
    Parse(String),
    Env(String, String),
    BadRole(String),
    BadClusterId(String),
    Weak(&'static str),
    OutOfRange(&'static str, String),
    Core(stretchfs_core::ConfigError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            ConfigError::Parse(e) => write!(f, "config: {e}"),
            ConfigError::Env(k, e) => write!(f, "environment {k}: {e}"),
            ConfigError::BadRole(r) => {
                write!(f, "unknown role {r:?} (roles are authority, store, prism)")
            }
            ConfigError::BadClusterId(s) => write!(f, "cluster_id {s:?} is not 32 hex digits"),
            ConfigError::Weak(what) => write!(f, "{what} must be at least 16 characters"),
            ConfigError::OutOfRange(what, why) => write!(f, "{what}: {why}"),
            ConfigError::Core(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::Read(p.to_path_buf(), e))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(e.to_string()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, std::env::vars())?;
        let cfg: FileConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.roles()?;
        self.cluster()?;
        if self.cluster_secret.len() < 16 {
            return Err(ConfigError::Weak("cluster_secret"));
        }
        if self.api_key.len() < 16 {
            return Err(ConfigError::Weak("api_key"));
        }
        if self.api_keys.iter().any(|k| k.len() < 16) {
            return Err(ConfigError::Weak("every key of api_keys"));
        }
        if !(1..=MAX_URL_TTL_SECS).contains(&self.url_ttl_secs) {
            let why = format!("must be 1 to {MAX_URL_TTL_SECS} seconds");
            return Err(ConfigError::OutOfRange("url_ttl_secs", why));
        }
        if self.max_object_bytes == 0 {
            let why = "must be at least 1 byte".to_string();
            return Err(ConfigError::OutOfRange("max_object_bytes", why));
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                let why = format!("{u:?} is not an http(s) URL");
                return Err(ConfigError::OutOfRange("public_url", why));
            }
        }
        self.node_config()?.validate().map_err(ConfigError::Core)
    }

    pub fn roles(&self) -> Result<Roles, ConfigError> {
        let mut roles = Roles::default();
        for r in &self.roles {
            match r.trim() {
                "authority" => roles.authority = true,
                "store" => roles.store = true,
                "prism" => roles.prism = true,
                other => return Err(ConfigError::BadRole(other.to_string())),
            }
        }
        Ok(roles)
    }

    pub fn cluster(&self) -> Result<ClusterId, ConfigError> {
        let s = self.cluster_id.trim();
        if s.len() != 32 {
            return Err(ConfigError::BadClusterId(s.to_string()));
        }
        u128::from_str_radix(s, 16)
            .ok()
            .filter(|c| *c != 0)
            .map(ClusterId)
            .ok_or_else(|| ConfigError::BadClusterId(s.to_string()))
    }

    pub fn node_config(&self) -> Result<NodeConfig, ConfigError> {
        let mut c = NodeConfig::new(
            self.listen,
            self.roles()?,
            Zone::new(self.zone.clone()),
            self.authority,
        );
        c.weight = self.weight;
        c.cluster = Some(self.cluster()?);
        c.content.replicas = self.replicas;
        c.content.write_quorum = self.write_quorum;
        Ok(c)
    }
}

/// `STRETCHFS_<KEY>` overrides `key` (`roles` takes a comma-separated list).
fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    const KEYS: [&str; 17] = [
        "data_dir",
        "listen",
        "authority",
        "roles",
        "zone",
        "weight",
        "cluster_id",
        "cluster_secret",
        "api_key",
        "api_keys",
        "public_url",
        "max_object_bytes",
        "proxy",
        "url_ttl_secs",
        "replicas",
        "write_quorum",
        "unused",
    ];
    for (k, v) in vars {
        let Some(key) = k.strip_prefix("STRETCHFS_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if !KEYS.contains(&key.as_str()) || key == "unused" {
            continue;
        }
        let value =
            match key.as_str() {
                "roles" | "api_keys" => toml::Value::Array(
                    v.split(',')
                        .map(|r| toml::Value::String(r.trim().to_string()))
                        .collect(),
                ),
                "weight" | "url_ttl_secs" | "replicas" | "write_quorum" | "max_object_bytes" => {
                    toml::Value::Integer(v.parse().map_err(|_| {
                        ConfigError::Env(k.clone(), format!("{v:?} is not a number"))
                    })?)
                }
                "proxy" => toml::Value::Boolean(v.parse().map_err(|_| {
                    ConfigError::Env(k.clone(), format!("{v:?} is not true/false"))
                })?),
                _ => toml::Value::String(v),
            };
        table.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
data_dir = "/tmp/x"
listen = "127.0.0.1:7000"
authority = "127.0.0.1:7000"
roles = ["authority", "prism"]
cluster_id = "0123456789abcdef0123456789abcdef"
cluster_secret = "0123456789abcdef-secret"
api_key = "0123456789abcdef-key"
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<FileConfig, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        apply_env(
            &mut table,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        let cfg: FileConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    #[test]
    fn file_and_environment() {
        let c = parse(
            GOOD,
            &[
                ("STRETCHFS_ROLES", "store, prism"),
                ("STRETCHFS_WEIGHT", "300"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.roles().unwrap(),
            Roles {
                authority: false,
                store: true,
                prism: true
            }
        );
        assert_eq!(c.weight, 300);
        assert_eq!(c.url_ttl_secs, 60);
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(GOOD, &[("STRETCHFS_ROLES", "stroe")]).unwrap_err();
        assert!(e.to_string().contains("stroe"), "{e}");
        let e = parse(GOOD, &[("STRETCHFS_CLUSTER_ID", "xyz")]).unwrap_err();
        assert!(matches!(e, ConfigError::BadClusterId(_)));
        let e = parse(GOOD, &[("STRETCHFS_API_KEY", "short")]).unwrap_err();
        assert!(e.to_string().contains("api_key"));
        let e = parse(GOOD, &[("STRETCHFS_WEIGHT", "heavy")]).unwrap_err();
        assert!(e.to_string().contains("STRETCHFS_WEIGHT"));
        let e = parse(&format!("{GOOD}\nbogus = 1\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        // The authority must listen where nodes join.
        let e = parse(GOOD, &[("STRETCHFS_AUTHORITY", "127.0.0.1:7001")]).unwrap_err();
        assert!(matches!(e, ConfigError::Core(_)), "{e}");
    }

    #[test]
    fn secrets_are_not_printed_and_bounds_are_checked() {
        let c = parse(
            GOOD,
            &[(
                "STRETCHFS_API_KEYS",
                "next-key-0123456789abcdef,third-key-0123456789",
            )],
        )
        .unwrap();
        assert_eq!(c.api_keys.len(), 2);
        let dump = format!("{c:?}");
        for secret in [
            "0123456789abcdef-secret",
            "0123456789abcdef-key",
            "next-key-0123456789abcdef",
        ] {
            assert!(!dump.contains(secret), "{dump}");
        }
        assert!(dump.contains("127.0.0.1:7000"), "the rest is there: {dump}");
        for ttl in ["0", "604801", "9223372036854775807"] {
            let e = parse(GOOD, &[("STRETCHFS_URL_TTL_SECS", ttl)]).unwrap_err();
            assert!(e.to_string().contains("url_ttl_secs"), "{ttl}: {e}");
        }
        let e = parse(GOOD, &[("STRETCHFS_API_KEYS", "short")]).unwrap_err();
        assert!(e.to_string().contains("api_keys"), "{e}");
        let e = parse(GOOD, &[("STRETCHFS_PUBLIC_URL", "evil.example")]).unwrap_err();
        assert!(e.to_string().contains("public_url"), "{e}");
        let c = parse(GOOD, &[("STRETCHFS_PUBLIC_URL", "https://cdn.example")]).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://cdn.example"));
        assert_eq!(c.max_object_bytes, 5 << 30);
    }
}
