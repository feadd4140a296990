//! Identities: nodes, the cluster, the feed log, and what a node is.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// A node's persistent identity, created at its first start and kept in its
/// data directory; a restarted node keeps it, even on a new address.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The cluster's identity, created by the authority at its first start and
/// carried by every message; traffic from another cluster is dropped.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ClusterId(pub u128);

impl ClusterId {
    /// Carried only by a node that has never joined (its first `Join`).
    pub const UNSET: ClusterId = ClusterId(0);

    pub fn is_set(self) -> bool {
        self != ClusterId::UNSET
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Identity of one incarnation of the authority's feed log. A reader that sees
/// a different log id than the one it replicated must take a new snapshot.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId(pub u64);

/// The roles a node runs. Any mix is allowed in one process.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Roles {
    pub authority: bool,
    pub store: bool,
    pub prism: bool,
}

impl Roles {
    pub const STORE: Roles = Roles {
        authority: false,
        store: true,
        prism: false,
    };
    pub const PRISM: Roles = Roles {
        authority: false,
        store: false,
        prism: true,
    };
    pub const AUTHORITY: Roles = Roles {
        authority: true,
        store: false,
        prism: false,
    };
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.authority {
            parts.push("authority");
        }
        if self.store {
            parts.push("store");
        }
        if self.prism {
            parts.push("prism");
        }
        if parts.is_empty() {
            parts.push("none");
        }
        write!(f, "{}", parts.join("+"))
    }
}

/// A failure domain (rack, room, availability zone). Observers and replicas
/// are spread over zones whenever possible.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Zone(pub String);

impl Zone {
    pub fn new(name: impl Into<String>) -> Zone {
        Zone(name.into())
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One registry entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub roles: Roles,
    pub zone: Zone,
    /// Relative capacity for placement (stores only); 100 is the usual.
    pub weight: u32,
    /// Which start of the node this entry is from (bumped on every start):
    /// a message from an earlier life, delayed, cannot undo a later one.
    pub incarnation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_fixed_width_hex() {
        assert_eq!(NodeId(255).to_string(), "00000000000000ff");
        assert_eq!(ClusterId(1).to_string().len(), 32);
        assert!(!ClusterId::UNSET.is_set());
        assert!(ClusterId(9).is_set());
    }

    #[test]
    fn roles_display_lists_each_role() {
        let r = Roles {
            authority: true,
            store: true,
            prism: false,
        };
        assert_eq!(r.to_string(), "authority+store");
        assert_eq!(Roles::default().to_string(), "none");
    }
}
