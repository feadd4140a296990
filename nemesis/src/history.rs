//! What clients did and what they were told: the only input the checker
//! trusts. Times are seconds on the client's monotonic clock since the run
//! began; `History::wall0` is the client's wall clock (unix seconds) at 0.

use serde::{Deserialize, Serialize};

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// No answer (refused, reset, timed out): the effect is unknown.
    NoAnswer(String),
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Status(s) => Some(*s),
            Outcome::NoAnswer(_) => None,
        }
    }

    pub fn is(&self, s: u16) -> bool {
        self.status() == Some(s)
    }

    /// Unavailable as a client sees it: 503, or no answer at all.
    pub fn unavailable(&self) -> bool {
        matches!(self, Outcome::Status(503) | Outcome::NoAnswer(_))
    }

    pub fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::NoAnswer(_) => "no answer".to_string(),
        }
    }
}

/// When in the run an operation happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Under the workload and the nemesis.
    Load,
    /// After every fault was healed: the final verification.
    Final,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// `PUT /v1/content` through `prism`; 201 acknowledges.
    Upload { prism: String, size: u64 },
    /// `POST /v1/content/exists`; `present` is the answer for this hash.
    Exists { present: Option<bool> },
    /// `DELETE /v1/content/{hash}`; 200 acknowledges.
    Delete,
    /// `POST /v1/purchases`; 201 acknowledges with `token` and `expires`
    /// (unix seconds, as the cluster stated it).
    Purchase {
        life_secs: u64,
        referrers: Vec<String>,
        token: Option<String>,
        expires: Option<u64>,
    },
    /// `GET /p/{token}/{file}` through `prism` (the outcome is the prism's
    /// answer), then the redirect followed: `store_status` and whether the
    /// bytes were exactly the uploaded ones (or the asked range of them).
    Deliver {
        prism: String,
        token: String,
        referer: Option<String>,
        range: Option<(u64, u64)>,
        store_status: Option<u16>,
        bytes_ok: Option<bool>,
    },
    /// `DELETE /v1/purchases/{token}`; 200 acknowledges.
    Revoke { token: String },
}

impl OpKind {
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Upload { .. } => "upload",
            OpKind::Exists { .. } => "exists",
            OpKind::Delete => "delete",
            OpKind::Purchase { .. } => "purchase",
            OpKind::Deliver { .. } => "deliver",
            OpKind::Revoke { .. } => "revoke",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    pub client: u32,
    /// The content the operation is about.
    pub hash: String,
    pub start: f64,
    pub end: f64,
    pub kind: OpKind,
    pub outcome: Outcome,
    pub phase: Phase,
}

impl Op {
    /// A delivery the prism granted (a redirect, or the bytes in proxy
    /// mode).
    pub fn granted(&self) -> bool {
        matches!(self.kind, OpKind::Deliver { .. })
            && matches!(self.outcome, Outcome::Status(302) | Outcome::Status(200))
    }
}

/// One fault the nemesis injected, from when it began to when it was healed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: String,
    pub target: String,
    pub start: f64,
    pub end: f64,
    pub detail: String,
}

/// Where the copies of one hash were found on the stores' disks at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCopies {
    pub hash: String,
    /// (store, zone) of each store holding `content/ab/cd/<hash>.<ext>`.
    pub stores: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub wall0: f64,
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
    /// When the last fault was healed and every node was up again.
    pub healed_at: Option<f64>,
    /// Copies on disk when the replication bound ran out (or all were in
    /// place).
    pub disk: Vec<DiskCopies>,
    /// The prisms the final phase must have delivered through.
    pub prisms: Vec<String>,
    /// The distinct zones of the stores.
    pub zones: usize,
}
