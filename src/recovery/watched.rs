//! The rows behind a scanner's lower key bound that it must come back to.
//!
//! Changelog keys sort by the time their id was minted within a shard, so a scanner need
//! not re-read the whole changelog on every pass: after a pass, every row minted before the
//! pass began has been seen, and only two kinds can still need recovery later:
//!
//! * rows that were not claimable when seen (live, claimed, deferred), which may turn
//!   stale at any time: the scanner *watches* them, re-reading each (by key, in batches)
//!   when it could first be stale: its stamp plus the staleness threshold, or its
//!   `due_at`;
//! * rows recorded after the pass went by although their ids were minted earlier (a
//!   writer that stalled between minting and recording, or whose clock runs behind): only
//!   the periodic full sweep finds them.
//!
//! The set is bounded (`recovery.max_watched_rows`). A row that does not fit goes into an
//! [`Overflow`] *span* instead: a box of shards and minting times, with the earliest time
//! one of its rows falls due, read whole (a key-range scan) then. Spans are bounded too
//! (a quarter as many as watched rows); when they are not enough, neighbours merge into
//! one that covers both, due at the earlier time. So a row that does not fit costs reads of
//! its neighbours in key order once it falls due, never a missed row, and a drain's
//! deferred rows — recovered in key order, due together — are read about once each
//! (docs/design/scanning.md).
//!
//! Leases and watch times are liveness only: a row watched late, or twice, is claimed by
//! the same compare-and-set as any other.

use std::collections::{BTreeSet, HashMap};

use crate::model::{ChangeId, Shard, ShardRange, ShardSet, Timestamp};

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

/// A box of changelog keys some row that did not fit the watch set lies in: shards
/// `first..=last`, ids minted in `from..=to` (milliseconds), the earliest time one of them
/// falls due, and, when a read of it stopped at its page limit, the last key read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Span {
    pub first: Shard,
    pub last: Shard,
    pub from: Timestamp,
    pub to: Timestamp,
    pub due: Timestamp,
    pub resume: Option<String>,
}

impl Span {
    /// The shards it covers that `owned` holds.
    pub fn shards(&self, owned: &ShardSet) -> ShardSet {
        ShardSet::from(ShardRange {
            first: self.first,
            last: self.last,
        })
        .intersection(owned)
    }

    /// Whether a read of it would still reach `id`: inside the box, past any resume key.
    fn covers(&self, id: &ChangeId, minted: Timestamp) -> bool {
        let shard = id.shard();
        self.first <= shard
            && shard <= self.last
            && self.from <= minted
            && minted <= self.to
            && self.resume.as_deref().is_none_or(|r| id.as_str() > r)
    }

    /// Shards times milliseconds: how much key space a read walks, for choosing merges.
    fn area(&self) -> u128 {
        let shards = u128::from(self.last.0 - self.first.0) + 1;
        let width = u128::try_from(self.to.0.saturating_sub(self.from.0)).unwrap_or(0) + 1;
        shards * width
    }

    /// The smallest span covering both, due at the earlier time, read from its start.
    fn merged(&self, other: &Span) -> Span {
        let later_due = crate::mutants::on(crate::mutants::Mutant::MergedSpanDueLater);
        Span {
            first: self.first.min(other.first),
            last: self.last.max(other.last),
            from: self.from.min(other.from),
            to: self.to.max(other.to),
            due: if later_due {
                self.due.max(other.due)
            } else {
                self.due.min(other.due)
            },
            resume: None,
        }
    }
}

/// The rows that did not fit the watch set, as at most a bounded number of [`Span`]s, and
/// the one being read page by page.
///
/// The span being read is never merged: a merge would read it again from its start, and
/// the rows of its first page, put back as spans of their own (not yet due), would merge
/// into it again, due at once — the read would never get past its first page. Read to its
/// end first, a span makes progress with every page, and each row it holds is read once.
#[derive(Debug, Default)]
pub(super) struct Overflow {
    spans: Vec<Span>,
    reading: Option<Span>,
}

impl Overflow {
    #[cfg(any(test, feature = "testing"))]
    pub fn len(&self) -> usize {
        self.spans.len() + usize::from(self.reading.is_some())
    }

    /// Makes sure a read falls on `id` from `due` on, keeping at most `capacity` spans
    /// (at least one). False for an id without a minting time, which no span can hold.
    pub fn add(&mut self, id: &ChangeId, due: Timestamp, capacity: usize) -> bool {
        let Some(minted) = id.minted_at() else {
            return false;
        };
        if let Some(span) = self
            .reading
            .iter_mut()
            .chain(self.spans.iter_mut())
            .find(|s| s.covers(id, minted))
        {
            span.due = span.due.min(due);
            return true;
        }
        let shard = id.shard();
        self.put_back(
            Span {
                first: shard,
                last: shard,
                from: minted,
                to: minted,
                due,
                resume: None,
            },
            capacity,
        );
        true
    }

    /// Takes out the span being read, or else the span due earliest, if one is due at
    /// `now`; [`Overflow::put_back`] returns what is left of it.
    pub fn take_due(&mut self, now: Timestamp) -> Option<Span> {
        if let Some(span) = self.reading.take() {
            return Some(span);
        }
        let (i, _) = self
            .spans
            .iter()
            .enumerate()
            .filter(|(_, s)| s.due <= now)
            .min_by_key(|(_, s)| s.due)?;
        Some(self.spans.swap_remove(i))
    }

    /// Whether a span is due at `now`.
    pub fn any_due(&self, now: Timestamp) -> bool {
        self.reading.is_some() || self.spans.iter().any(|s| s.due <= now)
    }

    /// Keeps `span`: one read part-way (it has a resume key) is read on next, unmerged;
    /// past `capacity` the others merge, neighbours in key order, down to half of it,
    /// cheapest merges first: those that add the least key space to read.
    pub fn put_back(&mut self, span: Span, capacity: usize) {
        let merges_like_others = crate::mutants::on(crate::mutants::Mutant::PartReadSpansMerge);
        if span.resume.is_some() && !merges_like_others {
            if let Some(was) = self.reading.replace(span) {
                self.spans.push(was);
            }
        } else {
            self.spans.push(span);
        }
        let capacity = capacity.max(1);
        if self.spans.len() > capacity {
            self.merge_down_to(capacity.div_ceil(2));
        }
    }

    fn merge_down_to(&mut self, target: usize) {
        if crate::mutants::on(crate::mutants::Mutant::OverflowSpansDropped) {
            self.spans.truncate(target);
            return;
        }
        self.spans.sort_by_key(|s| (s.first, s.from));
        // The cost of merging each span with the next one.
        let mut pairs: Vec<(u128, usize)> = self
            .spans
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let added = w[0]
                    .merged(&w[1])
                    .area()
                    .saturating_sub(w[0].area() + w[1].area());
                (added, i)
            })
            .collect();
        pairs.sort_unstable();
        let mut joins_next = vec![false; self.spans.len()];
        let merges = self.spans.len().saturating_sub(target);
        for &(_, i) in pairs.iter().take(merges) {
            joins_next[i] = true;
        }
        let mut merged: Vec<Span> = Vec::with_capacity(target);
        let mut joining = false;
        for (span, joins) in self.spans.drain(..).zip(joins_next) {
            match merged.last_mut() {
                Some(last) if joining => *last = last.merged(&span),
                _ => merged.push(span),
            }
            joining = joins;
        }
        self.spans = merged;
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

    /// Whether some span of `o` will read `id` no later than `due`.
    fn read_by(o: &Overflow, id: &ChangeId, due: Timestamp) -> bool {
        let minted = id.minted_at().expect("minted here");
        o.spans.iter().any(|s| s.covers(id, minted) && s.due <= due)
    }

    #[test]
    fn spans_stay_bounded_and_every_row_is_read_by_its_due_time() {
        let mut o = Overflow::default();
        let mut rows = Vec::new();
        for i in 0..500i64 {
            let id = ChangeId::mint_at(Timestamp(1_000_000 + i * 7));
            let due = Timestamp(5_000_000 - i * 3);
            assert!(o.add(&id, due, 16));
            assert!(o.len() <= 16, "at most the capacity: {}", o.len());
            rows.push((id, due));
        }
        for (id, due) in &rows {
            assert!(read_by(&o, id, *due), "{id} due at {due:?} is read by then");
        }
    }

    #[test]
    fn spans_fall_due_earliest_first_and_a_part_read_span_reads_on_past_its_resume_key() {
        let mut o = Overflow::default();
        let a = ChangeId::mint_at(Timestamp(1_000));
        let b = ChangeId::mint_at(Timestamp(2_000));
        assert!(o.add(&a, Timestamp(50), 8));
        assert!(o.add(&b, Timestamp(40), 8));
        assert_eq!(o.take_due(Timestamp(39)), None);
        let first = o.take_due(Timestamp(60)).expect("due");
        assert_eq!((first.from, first.due), (Timestamp(2_000), Timestamp(40)));
        // Read up to `b`'s key: a row at or before it is not covered by what is left.
        let rest = Span {
            resume: Some(b.as_str().to_owned()),
            ..first
        };
        o.put_back(rest, 8);
        assert!(o.add(&b, Timestamp(70), 8));
        assert_eq!(o.len(), 3, "b again is a span of its own");
        assert!(read_by(&o, &b, Timestamp(70)));
    }
}
