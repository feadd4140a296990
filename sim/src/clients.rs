//! Simulated clients: they upload content with real hashes, buy purchases
//! (with and without referrer lists, often right after an upload), ask for
//! deliveries (valid, expired, removed and made-up tokens; allowed and
//! refused referrers), remove purchases (again, sometimes), delete content
//! and upload the same bytes again, and keep the ground truth the content
//! oracles check against.

use std::collections::BTreeMap;
use std::sync::Arc;
use stretchfs_core::content::{ContentMeta, Ext};
use stretchfs_core::hash::{ContentHash, HashKind};
use stretchfs_core::purchase::Token;
use stretchfs_core::rng::{Rng, SeededRng};
use stretchfs_core::{ClientRequest, Duration, NodeId, Time, WallTime};
use stretchfs_transport_sim::HostId;

/// How much and what the clients do.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Time between client requests (cluster-wide).
    pub interval: Duration,
    pub start: Time,
    pub stop: Time,
    /// Relative weights of upload, purchase, deliver, remove, unknown-token,
    /// delete, and re-upload of deleted bytes.
    pub mix: [u32; 7],
    /// Purchase lifetimes are drawn from this range (seconds).
    pub life_secs: (u64, u64),
    /// Content sizes are drawn from this range (bytes).
    pub size: (u64, u64),
}

impl Workload {
    pub fn off() -> Workload {
        Workload {
            interval: Duration::from_millis(100),
            start: Time::MAX,
            stop: Time::MAX,
            mix: [0; 7],
            life_secs: (5, 60),
            size: (64, 4096),
        }
    }

    pub fn steady(start: Time, stop: Time) -> Workload {
        Workload {
            interval: Duration::from_millis(50),
            start,
            stop,
            mix: [3, 3, 10, 1, 1, 1, 1],
            life_secs: (5, 60),
            size: (64, 4096),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AckedUpload {
    pub hash: ContentHash,
    pub bytes: Arc<Vec<u8>>,
    pub meta: ContentMeta,
    /// The stores that acknowledged a durable copy.
    pub copies: Vec<NodeId>,
    pub acked_at: Time,
    /// When the request of the latest acknowledged upload was sent.
    pub issued_at: Time,
}

/// A client's delete of content.
#[derive(Clone, Debug)]
pub struct Deletion {
    pub hash: ContentHash,
    pub issued_at: Time,
    /// When it was acknowledged (a failed one may still run: never).
    pub settled_at: Option<Time>,
}

#[derive(Clone, Debug)]
pub struct Bought {
    pub token: Token,
    pub hash: ContentHash,
    /// Expiry by true time from the life asked for: no earlier than the
    /// request plus its life, no later than the answer plus its life.
    pub expires_earliest: WallTime,
    pub expires_latest: WallTime,
    /// What the authority stated.
    pub expires: WallTime,
    pub acked_at: Time,
    pub removal_requested: Option<Time>,
    pub removed_at: Option<Time>,
    /// The prism that created it.
    pub created_by: HostId,
    /// Referrer hosts it allows (empty: any).
    pub referrers: Vec<String>,
}

/// A referrer that purchases with a referrer list allow, and one they refuse.
pub const ALLOWED_REFERRER: &str = "https://www.allowed.example/page";
pub const REFUSED_REFERRER: &str = "https://refused.example/";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Upload {
        hash: ContentHash,
    },
    Purchase {
        hash: ContentHash,
        life: Duration,
    },
    /// Deliver purchase number `n` of `Clients::purchases`, with this
    /// referrer.
    Deliver {
        n: usize,
        referrer: Option<&'static str>,
    },
    Remove {
        n: usize,
    },
    /// Deliver a token nobody created.
    Unknown {
        token: Token,
    },
    /// Delete number `n` of `Clients::deletions`.
    Delete {
        n: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Pending {
    pub op: Op,
    pub host: HostId,
    pub issued_at: Time,
}

/// One request to hand to a prism.
pub struct Issued {
    pub host: HostId,
    pub id: u64,
    pub request: ClientRequest,
    /// For uploads: the bytes the prism spools.
    pub spool: Option<(ContentHash, ContentMeta, Arc<Vec<u8>>)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub issued: u64,
    /// Successful delivery answers per prism host.
    pub delivered_by: BTreeMap<HostId, u64>,
    pub uploads_acked: u64,
    pub purchases_acked: u64,
    pub deliveries_ok: u64,
    pub fetches_ok: u64,
    pub fetches_failed: u64,
    pub not_ready: u64,
    pub unavailable: u64,
    pub not_found: u64,
    pub expired: u64,
    pub removals_acked: u64,
    pub deletes_acked: u64,
    pub reuploads_acked: u64,
    pub refused_referrers: u64,
}

const EXTS: [&str; 5] = ["mp4", "jpg", "txt", "bin", "png"];

pub struct Clients {
    pub cfg: Workload,
    rng: SeededRng,
    next_id: u64,
    pub uploads: Vec<AckedUpload>,
    /// Uploads in flight by hash (the bytes the client sent).
    sent: BTreeMap<ContentHash, (Arc<Vec<u8>>, ContentMeta)>,
    pub purchases: Vec<Bought>,
    pub deletions: Vec<Deletion>,
    /// Purchases to make right after an upload was acknowledged.
    follow_ups: std::collections::VecDeque<(HostId, ContentHash)>,
    pending: BTreeMap<(HostId, u64), Pending>,
    pub stats: ClientStats,
}

impl Clients {
    pub fn new(seed: u64, cfg: Workload) -> Clients {
        Clients {
            cfg,
            rng: SeededRng::stream(seed, "clients"),
            next_id: 0,
            uploads: Vec::new(),
            sent: BTreeMap::new(),
            purchases: Vec::new(),
            deletions: Vec::new(),
            follow_ups: std::collections::VecDeque::new(),
            pending: BTreeMap::new(),
            stats: ClientStats::default(),
        }
    }

    /// Whether the latest acknowledged upload of `hash` must still be
    /// there: every delete of it was acknowledged before that upload was
    /// sent (one that failed may still run, so it never settles).
    pub fn must_exist(&self, hash: &ContentHash) -> bool {
        let Some(u) = self.upload(hash) else {
            return false;
        };
        self.deletions
            .iter()
            .filter(|d| d.hash == *hash)
            .all(|d| d.settled_at.is_some_and(|s| s < u.issued_at))
    }

    /// The bytes of content the clients uploaded (acknowledged or not).
    pub fn bytes_of(&self, hash: &ContentHash) -> Option<&Arc<Vec<u8>>> {
        self.sent.get(hash).map(|(b, _)| b)
    }

    pub fn upload(&self, hash: &ContentHash) -> Option<&AckedUpload> {
        self.uploads.iter().find(|u| u.hash == *hash)
    }

    fn pick_op(&mut self) -> usize {
        let total: u32 = self.cfg.mix.iter().sum();
        let mut x = self.rng.below(u64::from(total.max(1))) as u32;
        for (i, w) in self.cfg.mix.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        0
    }

    /// The next request, sent to one of `prisms` (running, not paused).
    pub fn next_request(&mut self, now: Time, prisms: &[HostId]) -> Option<Issued> {
        if prisms.is_empty() {
            return None;
        }
        let mut host = prisms[self.rng.below(prisms.len() as u64) as usize];
        let mut spool = None;
        let follow_up = self.follow_ups.pop_front();
        let choice = if follow_up.is_some() {
            1
        } else {
            self.pick_op()
        };
        let (op, request) = match choice {
            1 if follow_up.is_some() || !self.uploads.is_empty() => {
                let hash = match follow_up {
                    Some((prism, hash)) => {
                        if prisms.contains(&prism) {
                            host = prism;
                        }
                        hash
                    }
                    None => self.uploads[self.rng.below(self.uploads.len() as u64) as usize].hash,
                };
                let ext = self
                    .sent
                    .get(&hash)
                    .map_or_else(|| "bin".to_string(), |(_, m)| m.ext.to_string());
                let (lo, hi) = self.cfg.life_secs;
                let life = Duration::from_secs(lo + self.rng.below(hi - lo + 1));
                let referrers = if self.rng.chance(0.3) {
                    vec!["allowed.example".to_string()]
                } else {
                    vec![]
                };
                (
                    Op::Purchase { hash, life },
                    ClientRequest::Purchase {
                        hash,
                        ext,
                        life,
                        referrers,
                    },
                )
            }
            2 if !self.purchases.is_empty() => {
                // Recent purchases are asked for more often.
                let len = self.purchases.len() as u64;
                let n = if self.rng.chance(0.7) {
                    (len - 1 - self.rng.below(len.min(20))) as usize
                } else {
                    self.rng.below(len) as usize
                };
                let token = self.purchases[n].token;
                let referrer = match self.rng.below(4) {
                    0 => Some(ALLOWED_REFERRER),
                    1 => Some(REFUSED_REFERRER),
                    _ if self.purchases[n].referrers.is_empty() => None,
                    _ => Some(ALLOWED_REFERRER),
                };
                (
                    Op::Deliver { n, referrer },
                    ClientRequest::Deliver {
                        token,
                        referrer: referrer.map(str::to_string),
                    },
                )
            }
            3 if !self.purchases.is_empty() => {
                // Revoked ones too, sometimes: revoking again is fine.
                let n = self.rng.below(self.purchases.len() as u64) as usize;
                let p = &mut self.purchases[n];
                p.removal_requested.get_or_insert(now);
                (
                    Op::Remove { n },
                    ClientRequest::RemovePurchase { token: p.token },
                )
            }
            4 => {
                let token =
                    Token((self.rng.next_u64() as u128) << 64 | self.rng.next_u64() as u128);
                (
                    Op::Unknown { token },
                    ClientRequest::Deliver {
                        token,
                        referrer: None,
                    },
                )
            }
            5 if !self.uploads.is_empty() => {
                let hash = self.uploads[self.rng.below(self.uploads.len() as u64) as usize].hash;
                self.deletions.push(Deletion {
                    hash,
                    issued_at: now,
                    settled_at: None,
                });
                let n = self.deletions.len() - 1;
                (Op::Delete { n }, ClientRequest::Delete { hash })
            }
            6 if !self.deletions.is_empty() => {
                // The same bytes again, after (or while) they were deleted.
                let d = &self.deletions[self.rng.below(self.deletions.len() as u64) as usize];
                let hash = d.hash;
                let (bytes, meta) = self.sent[&hash].clone();
                spool = Some((hash, meta, bytes));
                (Op::Upload { hash }, ClientRequest::Upload { hash, meta })
            }
            _ => {
                let (lo, hi) = self.cfg.size;
                let size = lo + self.rng.below(hi - lo + 1);
                let mut bytes = vec![0u8; size as usize];
                self.rng.fill(&mut bytes);
                let hash = ContentHash::compute(HashKind::Sha1, &bytes);
                let ext = Ext::lit(EXTS[self.rng.below(EXTS.len() as u64) as usize]);
                let meta = ContentMeta { ext, size };
                let bytes = Arc::new(bytes);
                self.sent.insert(hash, (bytes.clone(), meta));
                spool = Some((hash, meta, bytes));
                (Op::Upload { hash }, ClientRequest::Upload { hash, meta })
            }
        };
        self.next_id += 1;
        let id = self.next_id;
        self.stats.issued += 1;
        self.pending.insert(
            (host, id),
            Pending {
                op,
                host,
                issued_at: now,
            },
        );
        Some(Issued {
            host,
            id,
            request,
            spool,
        })
    }

    pub fn take_pending(&mut self, host: HostId, id: u64) -> Option<Pending> {
        self.pending.remove(&(host, id))
    }

    pub fn record_upload(
        &mut self,
        hash: ContentHash,
        copies: Vec<NodeId>,
        now: Time,
        issued_at: Time,
        prism: HostId,
    ) {
        self.stats.uploads_acked += 1;
        // Often bought right away, through the same prism.
        if self.rng.chance(0.3) {
            self.follow_ups.push_back((prism, hash));
        }
        if let Some(u) = self.uploads.iter_mut().find(|u| u.hash == hash) {
            self.stats.reuploads_acked += 1;
            if issued_at > u.issued_at {
                u.issued_at = issued_at;
                u.acked_at = now;
                u.copies = copies;
            }
            return;
        }
        if let Some((bytes, meta)) = self.sent.get(&hash) {
            self.uploads.push(AckedUpload {
                hash,
                bytes: bytes.clone(),
                meta: *meta,
                copies,
                acked_at: now,
                issued_at,
            });
        }
    }

    pub fn record_delete(&mut self, n: usize, now: Time) {
        self.stats.deletes_acked += 1;
        if let Some(d) = self.deletions.get_mut(n) {
            d.settled_at.get_or_insert(now);
        }
    }

    pub fn record_purchase(
        &mut self,
        p: &stretchfs_core::purchase::Purchase,
        (expires_earliest, expires_latest): (WallTime, WallTime),
        now: Time,
        created_by: HostId,
    ) {
        self.stats.purchases_acked += 1;
        self.purchases.push(Bought {
            token: p.token,
            hash: p.hash,
            expires_earliest,
            expires_latest,
            expires: p.expires,
            acked_at: now,
            removal_requested: None,
            removed_at: None,
            created_by,
            referrers: p.referrers.clone(),
        });
    }

    pub fn record_removal(&mut self, n: usize, now: Time) {
        self.stats.removals_acked += 1;
        if let Some(p) = self.purchases.get_mut(n) {
            p.removed_at.get_or_insert(now);
        }
    }
}
