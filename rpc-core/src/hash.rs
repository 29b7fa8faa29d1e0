//! A fast hash for maps whose keys this side chooses.

/// foldhash's fast hash with a fixed seed, instead of SipHash, for maps whose keys only this
/// side inserts (call ids, a router's method names and command ids). A peer can look keys up
/// but never insert one, so it cannot build the colliding set a seeded, keyed hash guards
/// against.
pub(crate) type FoldState = foldhash::fast::FixedState;

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
