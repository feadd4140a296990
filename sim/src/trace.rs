//! The run's fingerprint (a hash over every input every node handled, in
//! order) and, on request, a readable event log.

use std::hash::{Hash, Hasher};
use stretchfs_core::rng::mix64;

/// A fast, stable, seedless hasher (the same bytes give the same hash on
/// every run and machine, unlike `RandomState`).
#[derive(Clone, Debug, Default)]
pub struct TraceHasher {
    state: u64,
}

impl Hasher for TraceHasher {
    fn finish(&self) -> u64 {
        mix64(self.state)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf) ^ ((chunk.len() as u64) << 56));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.state = mix64(self.state ^ v).rotate_left(5);
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v) | 0x100);
    }

    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v) | 0x1_0000);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v) | 0x1_0000_0000);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

pub struct Trace {
    hasher: TraceHasher,
    print: bool,
}

impl Trace {
    pub fn new(print: bool) -> Trace {
        Trace {
            hasher: TraceHasher::default(),
            print,
        }
    }

    pub fn printing(&self) -> bool {
        self.print
    }

    pub fn record(&mut self, item: &impl Hash) {
        item.hash(&mut self.hasher);
    }

    pub fn line(&self, text: std::fmt::Arguments<'_>) {
        if self.print {
            println!("{text}");
        }
    }

    pub fn hash(&self) -> u64 {
        self.hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_inputs_equal_hashes_and_order_matters() {
        let mut a = Trace::new(false);
        let mut b = Trace::new(false);
        a.record(&(1u64, "x"));
        a.record(&2u8);
        b.record(&(1u64, "x"));
        b.record(&2u8);
        assert_eq!(a.hash(), b.hash());
        let mut c = Trace::new(false);
        c.record(&2u8);
        c.record(&(1u64, "x"));
        assert_ne!(a.hash(), c.hash());
    }
}
