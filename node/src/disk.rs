//! Content on a store's disk: one file per hash under `content/ab/cd/`,
//! named `<hex>.<ext>`. A write goes to a temp file while it is hashed, is
//! fsynced, then renamed into place (and the directory fsynced), so a crash
//! leaves either the whole verified file or nothing. Prisms spool uploads
//! the same way until they are placed.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use stretchfs_core::content::{ContentMeta, Ext};
use stretchfs_core::hash::{ContentHash, HashKind, Hasher};
use tokio::io::AsyncWriteExt;

#[derive(Debug)]
pub enum WriteError {
    /// The bytes do not have the hash they were sent under.
    Mismatch {
        expected: ContentHash,
        got: ContentHash,
    },
    Io(io::Error),
    /// The sender's stream failed part way.
    Body(String),
    /// More bytes than the largest object this node takes.
    TooLarge {
        max: u64,
    },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Mismatch { expected, got } => {
                write!(f, "content hashes to {got}, not {expected}")
            }
            WriteError::Io(e) => write!(f, "disk: {e}"),
            WriteError::Body(e) => write!(f, "upload interrupted: {e}"),
            WriteError::TooLarge { max } => {
                write!(f, "content is larger than the {max} bytes this node takes")
            }
        }
    }
}

impl std::error::Error for WriteError {}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// A file written and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub hash: ContentHash,
    pub size: u64,
    pub path: PathBuf,
}

/// A file being written that is removed unless kept: a write abandoned
/// part way (the client went away and its request's future was dropped)
/// leaves nothing behind.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> TempFile {
        TempFile { path, armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// No longer removed on drop: the caller owns the file now.
    pub fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Blocking, but an unlink is quick and drops happen off the hot path.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A prism's spooled upload: removed when dropped.
#[derive(Debug)]
pub struct Spooled {
    pub hash: ContentHash,
    pub size: u64,
    pub file: TempFile,
}

#[derive(Debug)]
pub struct ContentDir {
    content: PathBuf,
    tmp: PathBuf,
    spool: PathBuf,
    /// Shard directories made durable by this process (at most 65,536):
    /// their parents need no second sync.
    durable_shards: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
}

impl ContentDir {
    pub fn open(data_dir: &Path) -> io::Result<ContentDir> {
        let d = ContentDir {
            content: data_dir.join("content"),
            tmp: data_dir.join("tmp"),
            spool: data_dir.join("spool"),
            durable_shards: Default::default(),
        };
        for p in [&d.content, &d.tmp, &d.spool] {
            std::fs::create_dir_all(p)?;
        }
        // The directories themselves survive a crash only once their parent
        // is synced.
        std::fs::File::open(data_dir)?.sync_all()?;
        // Leftovers of writes a crash interrupted.
        for dir in [&d.tmp, &d.spool] {
            for e in std::fs::read_dir(dir)?.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(d)
    }

    fn shard_dir(&self, hash: &ContentHash) -> PathBuf {
        let (a, b) = hash.shard();
        self.content.join(a).join(b)
    }

    pub fn path(&self, hash: &ContentHash, ext: &str) -> PathBuf {
        self.shard_dir(hash).join(format!("{hash}.{ext}"))
    }

    /// The stored file for `hash`, with its extension and size.
    pub fn find(&self, hash: &ContentHash) -> Option<(PathBuf, ContentMeta)> {
        let prefix = format!("{hash}.");
        for e in std::fs::read_dir(self.shard_dir(hash)).ok()?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // A file whose extension no upload could have given is not ours.
            if let Some(Ok(ext)) = name.strip_prefix(&prefix).map(Ext::new) {
                let size = e.metadata().ok()?.len();
                let meta = ContentMeta { ext, size };
                return Some((e.path(), meta));
            }
        }
        None
    }

    /// Streams `body` to a temp file, hashing it and syncing it, checked
    /// against `expected` if given (`kind` is used when there is no expected
    /// hash), and makes its shard directory durable. `commit` puts it in
    /// place.
    pub async fn stage<S, E>(
        &self,
        expected: Option<ContentHash>,
        kind: HashKind,
        body: S,
    ) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let (tmp, hash, size) = self
            .receive(&self.tmp, expected, kind, body, true, u64::MAX)
            .await?;
        self.make_shard_durable(&hash).await?;
        Ok(Written {
            hash,
            size,
            path: tmp.keep(),
        })
    }

    /// Creates the shard directory of `hash` if need be and syncs its
    /// parents (`content/ab`, `content`), so a file renamed into it is
    /// reachable after a crash. Every write does it until one has finished
    /// it for this shard, so none is acknowledged before the directory is
    /// durable; an error fails the write.
    async fn make_shard_durable(&self, hash: &ContentHash) -> io::Result<()> {
        let key = hash.shard();
        let known = |d: &Self| {
            d.durable_shards
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
        };
        if known(self) {
            return Ok(());
        }
        let dir = self.shard_dir(hash);
        tokio::fs::create_dir_all(&dir).await?;
        let parent = dir.parent().unwrap_or(&self.content);
        sync_dir(parent).await?;
        sync_dir(&self.content).await?;
        self.durable_shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        Ok(())
    }

    /// Renames a staged file into place (blocking and quick: callers run it
    /// under the lock that orders it with deletes). `durable` then makes
    /// the rename survive a crash.
    pub fn commit(&self, staged: &Written, ext: &str) -> io::Result<PathBuf> {
        let path = self.path(&staged.hash, ext);
        std::fs::rename(&staged.path, &path)?;
        Ok(path)
    }

    /// `stage`, `commit` and `durable` in one (no delete to order with).
    pub async fn store<S, E>(
        &self,
        expected: Option<ContentHash>,
        kind: HashKind,
        ext: &str,
        body: S,
    ) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let staged = self.stage(expected, kind, body).await?;
        let path = self.commit(&staged, ext)?;
        self.durable(&staged.hash).await?;
        Ok(Written { path, ..staged })
    }

    /// Syncs the shard directory of `hash`: a rename in it survives a crash.
    pub async fn durable(&self, hash: &ContentHash) -> io::Result<()> {
        sync_dir(&self.shard_dir(hash)).await
    }

    /// A prism's copy of an upload while it is placed (not fsynced: until
    /// the stores acknowledge, the client has not been told anything), of
    /// at most `max` bytes.
    pub async fn spool<S, E>(
        &self,
        expected: Option<ContentHash>,
        kind: HashKind,
        body: S,
        max: u64,
    ) -> Result<Spooled, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let (file, hash, size) = self
            .receive(&self.spool, expected, kind, body, false, max)
            .await?;
        Ok(Spooled { hash, size, file })
    }

    async fn receive<S, E>(
        &self,
        dir: &Path,
        expected: Option<ContentHash>,
        kind: HashKind,
        mut body: S,
        sync: bool,
        max: u64,
    ) -> Result<(TempFile, ContentHash, u64), WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let tmp = TempFile::new(dir.join(format!("{:016x}", rand::random::<u64>())));
        // Large writes: one blocking-pool hop per MiB, not per chunk.
        let mut file = tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::fs::File::create(tmp.path()).await?,
        );
        let mut hasher = Hasher::new(expected.map_or(kind, |h| h.kind()));
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| WriteError::Body(e.to_string()))?;
            size = size.saturating_add(chunk.len() as u64);
            if size > max {
                return Err(WriteError::TooLarge { max });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        if sync {
            file.get_ref().sync_all().await?;
        }
        let hash = hasher.finish();
        match expected {
            Some(exp) if exp != hash => Err(WriteError::Mismatch {
                expected: exp,
                got: hash,
            }),
            _ => Ok((tmp, hash, size)),
        }
    }

    /// Every stored file (blocking: run on a blocking thread).
    pub fn list(&self) -> Vec<(ContentHash, ContentMeta)> {
        let mut out = Vec::new();
        let Ok(level1) = std::fs::read_dir(&self.content) else {
            return out;
        };
        for a in level1.flatten() {
            let Ok(level2) = std::fs::read_dir(a.path()) else {
                continue;
            };
            for b in level2.flatten() {
                let Ok(files) = std::fs::read_dir(b.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name();
                    let name = name.to_string_lossy();
                    let Some((hex, ext)) = name.split_once('.') else {
                        continue;
                    };
                    let (Ok(hash), Ok(ext), Ok(md)) =
                        (ContentHash::parse(hex), Ext::new(ext), f.metadata())
                    else {
                        continue;
                    };
                    out.push((
                        hash,
                        ContentMeta {
                            ext,
                            size: md.len(),
                        },
                    ));
                }
            }
        }
        out
    }

    /// Re-hashes the stored file (blocking). False if missing or changed.
    pub fn verify(&self, hash: &ContentHash) -> bool {
        use std::io::Read;
        let Some((path, _)) = self.find(hash) else {
            return false;
        };
        let Ok(mut f) = std::fs::File::open(path) else {
            return false;
        };
        let mut h = Hasher::new(hash.kind());
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(_) => return false,
            }
        }
        h.finish() == *hash
    }

    /// Removes every file of `hash`: two uploads of the same bytes under
    /// different extensions may both have been committed.
    pub fn delete(&self, hash: &ContentHash) {
        while let Some((path, _)) = self.find(hash) {
            if std::fs::remove_file(&path).is_err() {
                break;
            }
        }
    }
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "stretchfs-disk-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn stored_files_are_verified_listed_and_found() {
        let d = dir();
        let c = ContentDir::open(&d).unwrap();
        let w = c
            .store(None, HashKind::Sha1, "txt", chunks(&[b"hello ", b"world"]))
            .await
            .unwrap();
        assert_eq!(w.hash, ContentHash::compute(HashKind::Sha1, b"hello world"));
        assert_eq!(w.size, 11);
        assert_eq!(c.find(&w.hash).unwrap().1.ext, "txt");
        assert_eq!(c.list().len(), 1);
        assert!(c.verify(&w.hash));
        std::fs::write(&w.path, b"hello w0rld").unwrap();
        assert!(!c.verify(&w.hash), "bit-rot is caught");
        c.delete(&w.hash);
        assert!(c.find(&w.hash).is_none());
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_delete_removes_the_same_bytes_under_every_extension() {
        let d = dir();
        let c = ContentDir::open(&d).unwrap();
        let a = c
            .store(None, HashKind::Sha1, "txt", chunks(&[b"same"]))
            .await
            .unwrap();
        c.store(None, HashKind::Sha1, "bin", chunks(&[b"same"]))
            .await
            .unwrap();
        c.delete(&a.hash);
        assert!(c.find(&a.hash).is_none(), "no copy left to serve");
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_hash_mismatch_keeps_nothing() {
        let d = dir();
        let c = ContentDir::open(&d).unwrap();
        let wrong = ContentHash::compute(HashKind::Sha256, b"other");
        let e = c
            .store(Some(wrong), HashKind::Sha1, "bin", chunks(&[b"data"]))
            .await
            .unwrap_err();
        assert!(matches!(e, WriteError::Mismatch { .. }));
        assert!(c.list().is_empty());
        assert_eq!(std::fs::read_dir(d.join("tmp")).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(d);
    }

    /// The first chunk, then a sender that stalls for ever; `reached` fires
    /// when the writer has asked for more than the first chunk.
    fn stalls_after(
        first: &'static [u8],
        reached: tokio::sync::oneshot::Sender<()>,
    ) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let stall = futures_util::stream::once(async move {
            let _ = reached.send(());
            futures_util::future::pending::<Result<Bytes, String>>().await
        });
        Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(first))]).chain(stall))
    }

    #[tokio::test]
    async fn a_write_abandoned_part_way_leaves_no_temp_file() {
        let d = dir();
        let c = ContentDir::open(&d).unwrap();
        for (name, spooled) in [("tmp", false), ("spool", true)] {
            let (tx, reached) = tokio::sync::oneshot::channel();
            let body = stalls_after(b"half an upload", tx);
            if spooled {
                let write = c.spool(None, HashKind::Sha1, body, u64::MAX);
                tokio::select! {
                    _ = write => panic!("a stalled body cannot finish"),
                    _ = reached => {}
                }
            } else {
                let write = c.stage(None, HashKind::Sha1, body);
                tokio::select! {
                    _ = write => panic!("a stalled body cannot finish"),
                    _ = reached => {}
                }
            }
            // The write's future is dropped here, as when a client goes away.
            assert_eq!(
                std::fs::read_dir(d.join(name)).unwrap().count(),
                0,
                "{name}"
            );
        }
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn an_upload_over_the_maximum_is_refused_and_nothing_kept() {
        let d = dir();
        let c = ContentDir::open(&d).unwrap();
        let e = c
            .spool(None, HashKind::Sha1, chunks(&[b"12345", b"678"]), 7)
            .await
            .unwrap_err();
        assert!(matches!(e, WriteError::TooLarge { max: 7 }), "{e}");
        assert_eq!(std::fs::read_dir(d.join("spool")).unwrap().count(), 0);
        let ok = c
            .spool(None, HashKind::Sha1, chunks(&[b"12345", b"67"]), 7)
            .await
            .unwrap();
        assert_eq!(ok.size, 7);
        let path = ok.file.path().to_path_buf();
        assert!(path.exists());
        drop(ok);
        assert!(!path.exists(), "a spooled upload is gone once dropped");
        let _ = std::fs::remove_dir_all(d);
    }
}
