//! The StretchFS deterministic simulator: core nodes over a seeded network,
//! with simulated clocks, crashes, pauses and partitions, checked by oracles
//! while it runs. Same seed, same trace hash.

pub mod availability;
pub mod bench;
pub mod bench_content;
pub mod clients;
pub mod clock;
pub mod config;
pub mod content_oracle;
pub mod disk;
pub mod engine;
pub mod meta_disk;
pub mod oracle;
pub mod report;
pub mod swarm;
pub mod trace;
pub mod verdict_audit;
pub mod world;

pub use config::{Fault, SimConfig};
pub use engine::{run, Sim};
pub use oracle::{Violation, ViolationKind};
pub use report::{Measurements, Report};
