//! What a node keeps across restarts. Core emits [`Record`]s; the driver
//! writes them (to redb in production, to a simulated disk in the simulator)
//! and hands the accumulated [`DurableState`] back at the next start.

use crate::authority::AuthorityStore;
use crate::feed::FeedEntry;
use crate::ids::{ClusterId, LogId, NodeId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Record {
    /// The node's id, written once at its first start.
    Identity { node: NodeId },
    /// Written at every start: the new incarnation number.
    Incarnation(u64),
    /// The cluster this node belongs to, written when it first joins.
    Cluster(ClusterId),
    /// The authority created its cluster and feed log.
    AuthorityCreated {
        cluster: ClusterId,
        log: LogId,
        retain: usize,
    },
    /// The authority appended an entry to the feed log.
    Appended(FeedEntry),
    /// The authority finished rebuilding a state it started without.
    Recovered,
    /// During recovery: this node handed back its purchases.
    Restored(NodeId),
    /// This store's full inventory scan against the current log was applied.
    Synced(NodeId),
    /// During recovery: a node the lost state knew, to wait for.
    Expected(NodeId),
}

/// The accumulated effect of every record written so far.
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    pub node: Option<NodeId>,
    pub incarnation: u64,
    pub cluster: Option<ClusterId>,
    pub authority: Option<AuthorityStore>,
}

impl DurableState {
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Identity { node } => self.node = Some(*node),
            Record::Incarnation(n) => self.incarnation = *n,
            Record::Cluster(c) => self.cluster = Some(*c),
            Record::AuthorityCreated {
                cluster,
                log,
                retain,
            } => {
                self.authority = Some(AuthorityStore::new(*cluster, *log, *retain));
            }
            Record::Appended(entry) => {
                if let Some(store) = &mut self.authority {
                    store.apply(entry.clone());
                }
            }
            Record::Recovered => {
                if let Some(store) = &mut self.authority {
                    store.recovered = true;
                }
            }
            Record::Restored(node) => {
                if let Some(store) = &mut self.authority {
                    store.restored.insert(*node);
                }
            }
            Record::Synced(node) => {
                if let Some(store) = &mut self.authority {
                    store.synced.insert(*node);
                }
            }
            Record::Expected(node) => {
                if let Some(store) = &mut self.authority {
                    store.expected.insert(*node);
                }
            }
        }
    }
}
