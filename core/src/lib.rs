//! StretchFS core: pure, sans-IO state machines shared by production nodes and
//! the deterministic simulator.
//!
//! A [`Node`] is driven with [`Node::handle`] (time and an [`Input`] in) and
//! drained with [`Node::poll_output`] and [`Node::poll_timeout`]. Nothing here
//! reads a clock, touches a socket or a file, or draws from a global RNG.

pub mod authority;
pub mod cluster_clock;
pub mod codec;
pub mod compaction;
pub mod config;
pub mod content;
pub mod durable;
pub mod feed;
pub mod feed_server;
pub mod hash;
pub mod health;
pub mod ids;
pub mod inventory;
pub mod io;
pub mod message;
pub mod node;
pub mod observers;
pub mod ping_net;
pub mod placement;
pub mod prism;
pub mod purchase;
pub mod registry;
pub mod repair;
pub mod replica;
pub mod restore;
pub mod rng;
pub mod snapshot_transfer;
pub mod state;
pub mod store;
pub mod time;
pub mod vote_tally;

pub use config::{
    ConfigError, ContentConfig, FeedConfig, InjectedBugs, NodeConfig, PingConfig, TallyConfig,
};
pub use durable::{DurableState, Record};
pub use ids::{ClusterId, LogId, NodeId, NodeInfo, Roles, Zone};
pub use io::{
    ClientError, ClientRequest, ClientResponse, DropReason, Input, Notice, Output, TransferSource,
    Transport,
};
pub use message::{Envelope, Message, PROTOCOL_VERSION};
pub use node::{Counters, Node};
pub use rng::{Rng, SeededRng};
pub use time::{Duration, Time, WallTime};
