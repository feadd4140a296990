//! Machine-level faults and their cleanup: iptables DROP rules between
//! loopback addresses (each tagged with a comment naming this run), small
//! tmpfs mounts, libfaketime. Each is probed first; what the machine refuses
//! is skipped with the reason.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs Debian packages when their command is missing (apt-get update
/// first, once).
pub fn ensure_packages(wanted: &[(&str, &str)]) -> Vec<String> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    let mut notes = Vec::new();
    if let Err(e) = run("apt-get", &["update", "-qq"]) {
        notes.push(format!("apt-get update failed: {e}"));
    }
    let mut args = vec!["install", "-y", "-qq"];
    args.extend(missing.iter());
    match Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => notes.push(format!("installed {}", missing.join(" "))),
        other => notes.push(format!(
            "apt-get install {} failed: {other:?}",
            missing.join(" ")
        )),
    }
    notes
}

/// Everything this run changed on the machine, to undo at the end (also
/// on Ctrl-C and on panic).
pub struct Machine {
    tag: String,
    rules: Mutex<Vec<(Ipv4Addr, Ipv4Addr)>>,
    mounts: Mutex<Vec<PathBuf>>,
}

impl Machine {
    pub fn new() -> Machine {
        Machine {
            tag: format!("stretchfs-nemesis-{}", std::process::id()),
            rules: Mutex::new(Vec::new()),
            mounts: Mutex::new(Vec::new()),
        }
    }

    fn rule_args<'a>(&'a self, op: &'a str, from: &'a str, to: &'a str) -> Vec<&'a str> {
        vec![
            op,
            "OUTPUT",
            "-s",
            from,
            "-d",
            to,
            "-m",
            "comment",
            "--comment",
            &self.tag,
            "-j",
            "DROP",
        ]
    }

    /// Drops every packet from `from` to `to`.
    pub fn drop_link(&self, from: Ipv4Addr, to: Ipv4Addr) -> Result<(), String> {
        let (f, t) = (from.to_string(), to.to_string());
        run("iptables", &self.rule_args("-I", &f, &t))?;
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((from, to));
        Ok(())
    }

    /// Removes these rules only.
    pub fn undrop(&self, links: &[(Ipv4Addr, Ipv4Addr)]) {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for (from, to) in links {
            if let Some(k) = rules.iter().position(|r| r == &(*from, *to)) {
                rules.remove(k);
                let (f, t) = (from.to_string(), to.to_string());
                let _ = run("iptables", &self.rule_args("-D", &f, &t));
            }
        }
    }

    pub fn heal_links(&self) {
        let rules: Vec<_> =
            std::mem::take(&mut *self.rules.lock().unwrap_or_else(|e| e.into_inner()));
        for (from, to) in rules {
            let (f, t) = (from.to_string(), to.to_string());
            let _ = run("iptables", &self.rule_args("-D", &f, &t));
        }
        // Anything left with this run's tag (a rule added but not recorded).
        if let Ok(list) = run("iptables", &["-S", "OUTPUT"]) {
            for line in list.lines().filter(|l| l.contains(&self.tag)) {
                let owned: Vec<String> = line
                    .replacen("-A ", "-D ", 1)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                let args: Vec<&str> = owned.iter().map(String::as_str).collect();
                let _ = run("iptables", &args);
            }
        }
    }

    /// Mounts a tmpfs of `bytes` at `dir`.
    pub fn mount_tmpfs(&self, dir: &Path, bytes: u64) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let d = dir.to_string_lossy().into_owned();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs", &d],
        )?;
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.to_path_buf());
        Ok(())
    }

    pub fn unmount(&self, dir: &Path) -> Result<(), String> {
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|m| m != dir);
        run("umount", &[&dir.to_string_lossy()]).map(|_| ())
    }

    /// Undoes every rule and mount (lazily unmounting what is busy).
    pub fn cleanup(&self) {
        self.heal_links();
        let mounts: Vec<_> =
            std::mem::take(&mut *self.mounts.lock().unwrap_or_else(|e| e.into_inner()));
        for m in mounts {
            let d = m.to_string_lossy().into_owned();
            if run("umount", &[&d]).is_err() {
                let _ = run("umount", &["-l", &d]);
            }
        }
    }
}

impl Default for Machine {
    fn default() -> Self {
        Machine::new()
    }
}

/// Do DROP rules between two loopback addresses cut a TCP connect here?
pub async fn probe_partitions(m: &Machine, a: Ipv4Addr, b: Ipv4Addr) -> Result<(), String> {
    if !have("iptables") {
        return Err("iptables is not installed".into());
    }
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((b, 0)))
        .await
        .map_err(|e| format!("bind {b}: {e}"))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let connect = || async {
        let s = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        s.bind(SocketAddr::from((a, 0)))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_millis(800), s.connect(to)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Ok(false),
        }
    };
    if !connect().await? {
        return Err("a plain connect between loopback addresses failed".into());
    }
    m.drop_link(a, b)?;
    let cut = connect().await;
    m.heal_links();
    match cut {
        Ok(false) | Err(_) => {}
        Ok(true) => return Err("a DROP rule did not stop a connection".into()),
    }
    if !connect().await? {
        return Err("the connection did not come back after the rule was removed".into());
    }
    Ok(())
}

/// Can a small tmpfs be mounted here?
pub fn probe_tmpfs(m: &Machine, dir: &Path) -> Result<(), String> {
    m.mount_tmpfs(dir, 1 << 20)?;
    let w = std::fs::write(dir.join("probe"), b"x").map_err(|e| e.to_string());
    m.unmount(dir)?;
    let _ = std::fs::remove_dir(dir);
    w
}

/// The libfaketime library, if it shifts the clock of a dynamically linked
/// program (`date`) here.
pub fn probe_faketime() -> Result<PathBuf, String> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or("libfaketime.so.1 not found (Debian package faketime)")?;
    let out = Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME", "+3600")
        .output()
        .map_err(|e| e.to_string())?;
    let faked: i64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| "date printed no number under faketime".to_string())?;
    let real = stretchfs_transport_http_unix_secs();
    if (faked - real - 3600).abs() > 5 {
        return Err(format!(
            "faketime did not shift the clock ({faked} vs {real})"
        ));
    }
    Ok(lib)
}

fn stretchfs_transport_http_unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
