//! Host uid/gid ranges for sandboxes' user namespaces: root inside a sandbox is the
//! first id of its range on the host, an unprivileged id no other instance holds.
//!
//! Ranges are [`IDS_PER_SANDBOX`] ids wide and aligned to that width from the pool's
//! first id, so two ranges are either the same or disjoint: a unique base is a
//! disjoint range (the store's unique index on the base is the whole guarantee).

use serde::{Deserialize, Serialize};

/// Ids per sandbox: uids (and gids) 0..65535 inside, as on a normal system.
pub const IDS_PER_SANDBOX: u32 = 65536;

/// The first host id handed out by default: 2^20, far above the uids a distribution or
/// a directory service assigns to people and daemons (Debian's go up to 60000, systemd's
/// dynamic and container ranges stop below 2^19 + 2^16).
pub const DEFAULT_FIRST_ID: u32 = 1 << 20;

/// One sandbox's block of host ids: ids `0..size` inside are `base..base + size` outside,
/// for uids and gids alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
// Part of the hub-agent protocol: unknown fields (a newer peer's optional ones) are ignored.
pub struct IdRange {
    /// The host id of root inside.
    pub base: u32,
    pub size: u32,
}

impl IdRange {
    /// The range of [`IDS_PER_SANDBOX`] ids starting at `base`.
    pub fn at(base: u32) -> IdRange {
        IdRange { base, size: IDS_PER_SANDBOX }
    }

    /// The last host id of the range; None if the range does not fit in 32 bits (or is
    /// empty), which no valid range does.
    pub fn last(&self) -> Option<u32> {
        self.size.checked_sub(1).and_then(|s| self.base.checked_add(s))
    }

    /// The host id of `inside`, if the range maps it.
    pub fn host_id(&self, inside: u32) -> Option<u32> {
        (inside < self.size).then(|| self.base + inside)
    }

    pub fn overlaps(&self, other: &IdRange) -> bool {
        match (self.last(), other.last()) {
            (Some(a), Some(b)) => self.base <= b && other.base <= a,
            _ => false,
        }
    }

    /// Valid: not empty, inside 32 bits, and clear of host root (base 0) and of the
    /// ids below [`IDS_PER_SANDBOX`] that the host itself uses.
    pub fn check(&self) -> Result<(), String> {
        if self.last().is_none_or(|l| l == u32::MAX) {
            return Err(format!("ids {}+{} do not fit below 2^32 - 1", self.base, self.size));
        }
        if self.base < IDS_PER_SANDBOX {
            return Err(format!("base {} would map a sandbox onto host system ids (below {IDS_PER_SANDBOX})", self.base));
        }
        Ok(())
    }
}

impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.base, self.base as u64 + self.size as u64 - 1)
    }
}

/// Where the hub cuts ranges from: `ranges` ranges of [`IDS_PER_SANDBOX`] ids from `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdPool {
    first: u32,
    ranges: u32,
}

impl Default for IdPool {
    /// From 2^20 up to the top of the 32-bit id space (65,519 ranges).
    fn default() -> Self {
        IdPool::new(DEFAULT_FIRST_ID, IdPool::max_ranges(DEFAULT_FIRST_ID)).expect("the default pool is valid")
    }
}

impl IdPool {
    /// How many ranges fit from `first` below 2^32 - 1 (the invalid id).
    pub fn max_ranges(first: u32) -> u32 {
        (u32::MAX - first) / IDS_PER_SANDBOX
    }

    /// A pool of `ranges` ranges from `first`, which must be a multiple of
    /// [`IDS_PER_SANDBOX`] (so bases stay on one grid whatever pool a hub was given)
    /// and at least [`IDS_PER_SANDBOX`].
    pub fn new(first: u32, ranges: u32) -> Result<IdPool, String> {
        if first < IDS_PER_SANDBOX || !first.is_multiple_of(IDS_PER_SANDBOX) {
            return Err(format!("the first sandbox id {first} must be a non-zero multiple of {IDS_PER_SANDBOX}"));
        }
        if ranges == 0 || ranges > IdPool::max_ranges(first) {
            return Err(format!("{ranges} ranges from {first} do not fit: between 1 and {} do", IdPool::max_ranges(first)));
        }
        Ok(IdPool { first, ranges })
    }

    pub fn ranges(&self) -> u32 {
        self.ranges
    }

    /// The host ids the pool covers, for messages: `first..last`.
    pub fn span(&self) -> String {
        format!("{}..{}", self.first, self.first as u64 + self.ranges as u64 * IDS_PER_SANDBOX as u64 - 1)
    }

    /// The lowest range of the pool whose base is not `taken`; None when every one is.
    pub fn first_free(&self, taken: &std::collections::HashSet<u32>) -> Option<IdRange> {
        (0..self.ranges).map(|k| self.first + k * IDS_PER_SANDBOX).find(|b| !taken.contains(b)).map(IdRange::at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ranges_map_and_overlap() {
        let r = IdRange::at(1 << 20);
        assert_eq!(r.host_id(0), Some(1 << 20));
        assert_eq!(r.host_id(65535), Some((1 << 20) + 65535));
        assert_eq!(r.host_id(65536), None);
        assert_eq!(r.to_string(), "1048576..1114111");
        assert!(r.overlaps(&r));
        assert!(!r.overlaps(&IdRange::at((1 << 20) + IDS_PER_SANDBOX)));
        assert!(r.overlaps(&IdRange { base: (1 << 20) + 65535, size: 1 }));
        assert!(r.check().is_ok());
        assert!(IdRange::at(0).check().is_err(), "host root is never a sandbox's");
        assert!(IdRange::at(1000).check().is_err());
        assert!(IdRange { base: u32::MAX - 10, size: 65536 }.check().is_err());
        assert!(IdRange { base: 1 << 20, size: 0 }.check().is_err());
    }

    #[test]
    fn pools_hand_out_the_lowest_free_aligned_range() {
        let p = IdPool::new(1 << 20, 3).unwrap();
        let mut taken = HashSet::new();
        for k in 0..3 {
            let r = p.first_free(&taken).unwrap();
            assert_eq!(r.base, (1 << 20) + k * IDS_PER_SANDBOX);
            taken.insert(r.base);
        }
        assert_eq!(p.first_free(&taken), None, "exhausted");
        taken.remove(&((1 << 20) + IDS_PER_SANDBOX));
        assert_eq!(p.first_free(&taken).unwrap().base, (1 << 20) + IDS_PER_SANDBOX, "a freed range is reused");
        assert_eq!(p.span(), "1048576..1245183");
    }

    #[test]
    fn pools_are_checked() {
        assert!(IdPool::new(0, 1).is_err());
        assert!(IdPool::new((1 << 20) + 1, 1).is_err(), "unaligned");
        assert!(IdPool::new(1 << 20, 0).is_err());
        assert!(IdPool::new(1 << 20, IdPool::max_ranges(1 << 20) + 1).is_err());
        let p = IdPool::default();
        assert_eq!(p.ranges(), 65519);
        // The last range of the default pool is valid: it ends below 2^32 - 1.
        let all: HashSet<u32> = (0..p.ranges() - 1).map(|k| DEFAULT_FIRST_ID + k * IDS_PER_SANDBOX).collect();
        let last = p.first_free(&all).unwrap();
        assert!(last.check().is_ok(), "{last}");
        assert!(last.last().unwrap() < u32::MAX);
    }
}
