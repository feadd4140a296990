//! The StretchFS nemesis: real `stretchfs` processes under a mixed client
//! load while faults are injected, and a checker over what the clients were
//! told. `history` is the record, `checker` the pure judgement over it,
//! `faults` the machine-level faults (firewall rules, a small tmpfs, a
//! clock offset) and their cleanup.

pub mod checker;
pub mod faults;
pub mod history;
