//! A local cluster of real `stretchfs run` processes on loopback, for the
//! multi-process tests, the benchmark and the nemesis: start, kill -9,
//! SIGSTOP/SIGCONT, wipe, restart.

use crate::client::{call, empty, full, Reply};
use crate::dev::{layout, DevSecrets, Member};
use crate::status::NodeStatus;
use hyper::Method;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ProcCluster {
    pub dir: PathBuf,
    pub secrets: DevSecrets,
    pub members: Vec<Member>,
    bin: PathBuf,
    procs: Vec<Option<Child>>,
    /// Extra environment per member, applied at every (re)spawn.
    env: Vec<Vec<(String, String)>>,
}

const T: Duration = Duration::from_secs(30);

impl ProcCluster {
    /// The dev layout on `ip` (e.g. 127.0.0.7) from `port`, every node its
    /// own process.
    pub fn start(bin: &Path, dir: &Path, ip: &str, port: u16) -> ProcCluster {
        ProcCluster::start_with(bin, dir, ip, port, |_| {})
    }

    /// `start`, with each member's configuration adjusted by `adjust`.
    pub fn start_with(
        bin: &Path,
        dir: &Path,
        ip: &str,
        port: u16,
        adjust: impl Fn(&mut Member),
    ) -> ProcCluster {
        let mut c = ProcCluster::prepare(bin, dir, ip, port, adjust);
        for i in 0..c.members.len() {
            c.spawn(i);
        }
        c
    }

    /// `start_with` without spawning anything yet: set the environment
    /// (`set_env`) first, then `spawn` each member.
    pub fn prepare(
        bin: &Path,
        dir: &Path,
        ip: &str,
        port: u16,
        adjust: impl Fn(&mut Member),
    ) -> ProcCluster {
        let _ = std::fs::remove_dir_all(dir);
        let secrets = DevSecrets::generate();
        let mut members = layout(dir, ip, port, &secrets);
        members.iter_mut().for_each(adjust);
        let n = members.len();
        ProcCluster {
            dir: dir.to_path_buf(),
            secrets,
            members,
            bin: bin.to_path_buf(),
            procs: (0..n).map(|_| None).collect(),
            env: vec![Vec::new(); n],
        }
    }

    /// Sets (or replaces) an environment variable for member `i`'s next
    /// spawns.
    pub fn set_env(&mut self, i: usize, key: &str, value: &str) {
        self.env[i].retain(|(k, _)| k != key);
        self.env[i].push((key.to_string(), value.to_string()));
    }

    pub fn unset_env(&mut self, i: usize, key: &str) {
        self.env[i].retain(|(k, _)| k != key);
    }

    /// The process id of member `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(|c| c.id())
    }

    fn signal(&self, i: usize, sig: &str) -> bool {
        let Some(pid) = self.pid(i) else { return false };
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGSTOP: the process freezes, sockets stay open.
    pub fn pause(&self, i: usize) -> bool {
        self.signal(i, "STOP")
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self, i: usize) -> bool {
        self.signal(i, "CONT")
    }

    /// kill -9 of every member.
    pub fn kill_all(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }

    pub fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.members[self.index(name)].cfg.listen)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    pub fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let c = &m.cfg;
        std::fs::create_dir_all(&self.dir).expect("cluster dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&m.name))
            .expect("log file");
        let child = Command::new(&self.bin)
            .arg("run")
            .env(
                "RUST_LOG",
                std::env::var("STRETCHFS_TEST_LOG").unwrap_or("info".into()),
            )
            .env("STRETCHFS_DATA_DIR", &c.data_dir)
            .env("STRETCHFS_LISTEN", c.listen.to_string())
            .env("STRETCHFS_AUTHORITY", c.authority.to_string())
            .env("STRETCHFS_ROLES", c.roles.join(","))
            .env("STRETCHFS_ZONE", &c.zone)
            .env("STRETCHFS_CLUSTER_ID", &c.cluster_id)
            .env("STRETCHFS_CLUSTER_SECRET", &c.cluster_secret)
            .env("STRETCHFS_API_KEY", &c.api_key)
            .env("STRETCHFS_PROXY", c.proxy.to_string())
            .env("STRETCHFS_URL_TTL_SECS", c.url_ttl_secs.to_string())
            .env("STRETCHFS_MAX_OBJECT_BYTES", c.max_object_bytes.to_string())
            .envs(
                c.public_url
                    .iter()
                    .map(|u| ("STRETCHFS_PUBLIC_URL", u.clone())),
            )
            .envs(
                Some(c.api_keys.join(","))
                    .filter(|k| !k.is_empty())
                    .map(|k| ("STRETCHFS_API_KEYS", k)),
            )
            .envs(self.env[i].iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn stretchfs");
        self.procs[i] = Some(child);
    }

    /// SIGKILL: no leave, no flush.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let mut c = self.procs[i].take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn wipe(&self, i: usize) {
        let _ = std::fs::remove_dir_all(&self.members[i].cfg.data_dir);
    }

    /// Loses only the metadata database (`meta.redb`) of member `i`.
    pub fn wipe_metadata(&self, i: usize) {
        let _ = std::fs::remove_file(self.members[i].cfg.data_dir.join("meta.redb"));
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.secrets.api_key)
    }

    pub async fn get(&self, url: &str) -> Result<Reply, String> {
        call(Method::GET, url, &[], empty(), T).await
    }

    /// Waits until `/readyz` answers 200 on every running node.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        for (i, m) in self.members.iter().enumerate() {
            if self.procs[i].is_none() {
                continue;
            }
            let url = format!("http://{}/readyz", m.cfg.listen);
            loop {
                if matches!(self.get(&url).await, Ok(r) if r.status == 200) {
                    break;
                }
                if start.elapsed() > within {
                    return Err(format!("{} not ready within {within:?}", m.name));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // A fresh authority first gives nodes the recovery window to hand
        // back what it might have lost; until then misses are "unavailable".
        let ai = self.index("authority");
        while self.procs[ai].is_some() {
            if matches!(self.status("authority").await, Ok(s) if s.authority.as_ref().is_some_and(|a| !a.recovering))
            {
                break;
            }
            if start.elapsed() > within {
                return Err(format!("authority still recovering after {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    pub async fn upload(&self, prism: &str, bytes: Vec<u8>, ext: &str) -> Result<Reply, String> {
        let url = format!("{}/v1/content?ext={ext}", self.url(prism));
        let auth = self.auth();
        call(
            Method::PUT,
            &url,
            &[("authorization", &auth)],
            full(bytes),
            T,
        )
        .await
    }

    pub async fn purchase(
        &self,
        prism: &str,
        hash: &str,
        ext: &str,
        life: &str,
    ) -> Result<Reply, String> {
        let body = serde_json::json!({ "hash": hash, "ext": ext, "life": life });
        let auth = self.auth();
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let url = format!("{}/v1/purchases", self.url(prism));
        call(Method::POST, &url, &headers, full(body.to_string()), T).await
    }

    pub async fn status(&self, name: &str) -> Result<NodeStatus, String> {
        let auth = self.auth();
        let url = format!("{}/v1/status", self.url(name));
        let r = call(
            Method::GET,
            &url,
            &[("authorization", &auth)],
            empty(),
            Duration::from_secs(2),
        )
        .await?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.text()));
        }
        serde_json::from_slice(&r.body).map_err(|e| e.to_string())
    }

    /// Delivers a purchase through `prism`: the prism's answer, and (after
    /// a redirect) the store's.
    pub async fn deliver(
        &self,
        prism: &str,
        token: &str,
        file: &str,
    ) -> Result<(Reply, Option<Reply>), String> {
        let first = self
            .get(&format!("{}/p/{token}/{file}", self.url(prism)))
            .await?;
        if first.status != 302 {
            return Ok((first, None));
        }
        let to = first
            .header("location")
            .ok_or("302 without location")?
            .to_string();
        let second = self.get(&to).await?;
        Ok((first, Some(second)))
    }

    pub fn running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        self.kill_all();
        // Kept after a failed test: the logs say what happened.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
