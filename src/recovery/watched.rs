//! The rows behind a scanner's lower key bound that it must come back to.
//!
//! Changelog keys sort by the time their id was minted within a shard, so a scanner need
//! not re-read the whole changelog on every pass: after a pass, every row minted before the
//! pass began has been seen, and only two kinds can still need recovery later:
//!
//! * rows that were not claimable when seen (live, claimed, deferred), which may turn
//!   stale at any time: the scanner *watches* them, re-reading each (by key, in batches)
//!   when it could first be stale: its stamp plus the staleness threshold, or its
//!   `cleanup_after`;
//! * rows recorded after the pass went by although their ids were minted earlier (a
//!   writer that stalled between minting and recording, or whose clock runs behind): only
//!   the periodic full sweep finds them.
//!
//! The set is bounded (`recovery.max_watched_rows`). A row that does not fit *pins* the
//! lower bound instead: the next pass starts at its key, so nothing is lost, and the cost
//! degrades to re-reading the key range from there.
//!
//! Leases and watch times are liveness only: a row watched late, or twice, is claimed by
//! the same compare-and-set as any other.

use std::collections::{BTreeSet, HashMap};

use crate::model::{ChangeId, Timestamp};

#[derive(Debug, Default)]
pub(super) struct Watched {
    /// (due, id), in the order they fall due.
    due: BTreeSet<(Timestamp, ChangeId)>,
    by_id: HashMap<ChangeId, Timestamp>,
}

impl Watched {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Watches `id` until `due` (moving it if already watched). False when `capacity` rows
    /// are already watched and `id` is not one of them.
    pub fn watch(&mut self, id: &ChangeId, due: Timestamp, capacity: usize) -> bool {
        let full = self.by_id.len() >= capacity;
        match self.by_id.get_mut(id) {
            Some(at) => {
                self.due.remove(&(*at, id.clone()));
                *at = due;
            }
            None if full => return false,
            None => {
                self.by_id.insert(id.clone(), due);
            }
        }
        self.due.insert((due, id.clone()));
        true
    }

    /// Stops watching the rows `keep` rejects (those of shards handed to another scanner).
    pub fn retain(&mut self, keep: impl Fn(&ChangeId) -> bool) {
        self.by_id.retain(|id, _| keep(id));
        self.due.retain(|(_, id)| keep(id));
    }

    /// Stops watching and returns up to `max` rows due at `now`, earliest first.
    pub fn take_due(&mut self, now: Timestamp, max: usize) -> Vec<ChangeId> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((at, _)) = self.due.first() else {
                break;
            };
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.due.pop_first() {
                self.by_id.remove(&id);
                out.push(id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_due_in_order_and_the_set_is_bounded() {
        let mut w = Watched::default();
        let (a, b, c) = (ChangeId::mint(), ChangeId::mint(), ChangeId::mint());
        assert!(w.watch(&a, Timestamp(30), 2));
        assert!(w.watch(&b, Timestamp(10), 2));
        assert!(!w.watch(&c, Timestamp(5), 2), "full");
        assert!(
            w.watch(&a, Timestamp(20), 2),
            "moving a watched row needs no room"
        );
        assert_eq!(w.take_due(Timestamp(9), 10), Vec::<ChangeId>::new());
        assert_eq!(w.take_due(Timestamp(25), 10), vec![b, a.clone()]);
        assert_eq!(w.len(), 0);
    }
}
