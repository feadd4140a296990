//! The StretchFS node: drives core on tokio over HTTP, keeps content on disk
//! and metadata in an embedded database.

pub mod cli;
pub mod client;
pub mod config;
pub mod dev;
pub mod disk;
pub mod http;
pub mod local_cluster;
pub mod metadata;
pub mod runtime;
pub mod server;
pub mod status;
pub mod throttle;
