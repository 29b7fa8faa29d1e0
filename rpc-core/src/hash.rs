//! A fast hash for maps whose keys this side chooses.

use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-rotate fold of the bytes, as FxHash does, instead of SipHash: for maps whose keys
/// only this side inserts (call ids, a router's method names and command ids). A peer can look
/// keys up but never insert one, so it cannot build the colliding set a seeded hash guards
/// against.
#[derive(Default, Clone, Copy)]
pub(crate) struct FoldHasher(u64);

/// Builds [`FoldHasher`]s.
pub(crate) type FoldState = BuildHasherDefault<FoldHasher>;

impl FoldHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }

    fn write_u16(&mut self, n: u16) {
        self.add(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn sequential_and_random_keys_spread_over_the_table() {
        // hashbrown takes the bucket from the low bits and a tag from the top 7: both must vary.
        let state = FoldState::default();
        let low: HashSet<u64> = (0..4096u64).map(|n| state.hash_one(n) & 0xfff).collect();
        let top: HashSet<u64> = (0..4096u64).map(|n| state.hash_one(n) >> 57).collect();
        assert!(low.len() > 2500, "{} distinct buckets of 4096", low.len());
        assert_eq!(top.len(), 128, "every tag is used");
        let names = ["add", "echo", "ping", "store", "find_node", "find_value"];
        let hashes: HashSet<u64> = names.iter().map(|n| state.hash_one(n)).collect();
        assert_eq!(hashes.len(), names.len());
    }
}
