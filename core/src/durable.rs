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
    /// A copy of deleted content a store reported, waiting for a re-upload
    /// to claim it (`Some`), or no longer waiting (`None`): kept across
    /// restarts so such a copy is never forgotten while nobody lists it.
    Orphan {
        hash: crate::hash::ContentHash,
        store: NodeId,
        meta: Option<crate::content::ContentMeta>,
    },
    /// A drop order the store has not answered yet (`Some(fence)`), or
    /// answered (`None`): kept across restarts, since an order lost on the
    /// way would otherwise leave a copy nobody lists.
    DropPending {
        hash: crate::hash::ContentHash,
        store: NodeId,
        upto: Option<crate::message::VoteSeq>,
    },
    /// The authority applied this store's inventory report `seq`: drop
    /// orders are fenced by it, also after a restart.
    Reported {
        store: NodeId,
        seq: crate::message::VoteSeq,
    },
    /// An admin removed this node: what was kept for it (sync, recovery
    /// marks, orphans, drop orders; not its report fence) is dropped.
    Forgotten(NodeId),
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
            Record::Orphan {
                hash,
                store: node,
                meta,
            } => {
                if let Some(store) = &mut self.authority {
                    match meta {
                        Some(m) => store.orphans.insert((*hash, *node), *m),
                        None => store.orphans.remove(&(*hash, *node)),
                    };
                }
            }
            Record::DropPending {
                hash,
                store: node,
                upto,
            } => {
                if let Some(store) = &mut self.authority {
                    match upto {
                        Some(u) => store.drops_pending.insert((*hash, *node), *u),
                        None => store.drops_pending.remove(&(*hash, *node)),
                    };
                }
            }
            Record::Reported { store: node, seq } => {
                if let Some(store) = &mut self.authority {
                    store.reports.insert(*node, *seq);
                }
            }
            Record::Expected(node) => {
                if let Some(store) = &mut self.authority {
                    store.expected.insert(*node);
                }
            }
            Record::Forgotten(node) => {
                if let Some(store) = &mut self.authority {
                    store.forget(*node);
                }
            }
        }
    }
}
