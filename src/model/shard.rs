//! Shards: the hash-derived prefix of a changelog row key, and the sets of them that
//! scanners own.

use uuid::Uuid;

use super::{ModelError, Timestamp};

/// Number of changelog shards. Fixed forever for a deployment: it is part of the row key.
/// Scanners share them through leases ([`crate::shard_lease`]); 1,024 let hundreds of scanners
/// split the key space within one shard of each other, while a scanner that owns them all
/// still reads one row range per shard per key-bounded round (see `ScanRequest::minted`).
pub const SHARD_COUNT: u16 = 1024;

/// Hex digits of the shard prefix of a row key.
pub(super) const SHARD_DIGITS: usize = 3;

/// The hash-derived prefix of a changelog row key. It keeps writes from hot-spotting one
/// Bigtable tablet (uuid v7 keys alone are time-ordered) and gives scanners their partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shard(pub u16);

impl Shard {
    /// The last shard.
    pub const LAST: Shard = Shard(SHARD_COUNT - 1);

    /// The shard's first row key (inclusive).
    pub fn start_key(self) -> String {
        format!("{:03x}/", self.0)
    }

    /// The row key just past the shard (exclusive); `None` for the last shard.
    pub fn end_key(self) -> Option<String> {
        (self < Self::LAST).then(|| format!("{:03x}/", self.0 + 1))
    }
}

/// `07f`: the form row keys, lease rows and logs use.
impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:03x}", self.0)
    }
}

/// A contiguous, inclusive range of shards, owned by one scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRange {
    /// The first shard in the range.
    pub first: Shard,
    /// The last shard in the range (inclusive).
    pub last: Shard,
}

/// `000-3ff`: the form logs and the backlog metrics' `shards` label use.
impl std::fmt::Display for ShardRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl ShardRange {
    /// Every shard.
    pub const ALL: ShardRange = ShardRange {
        first: Shard(0),
        last: Shard::LAST,
    };

    /// The shards that scanner `index` of a pool of `count` owns. Every shard is owned by
    /// exactly one scanner, and the ranges differ in size by at most one shard.
    pub fn for_member(index: u16, count: u16) -> Result<Self, ModelError> {
        if count == 0 || count > SHARD_COUNT {
            return Err(ModelError::new(
                "scanner count",
                &count.to_string(),
                "must be between 1 and 1024",
            ));
        }
        if index >= count {
            return Err(ModelError::new(
                "scanner index",
                &index.to_string(),
                "must be smaller than the scanner count",
            ));
        }
        let n = u32::from(SHARD_COUNT);
        let (i, c) = (u32::from(index), u32::from(count));
        let first = i * n / c;
        let last = (i + 1) * n / c - 1;
        Ok(Self {
            first: Shard(first as u16),
            last: Shard(last as u16),
        })
    }

    /// Whether `shard` lies in the range.
    pub fn contains(&self, shard: Shard) -> bool {
        self.first <= shard && shard <= self.last
    }

    /// The range's shards in key order.
    pub fn iter(&self) -> impl Iterator<Item = Shard> + use<> {
        (self.first.0..=self.last.0).map(Shard)
    }

    /// The first row key of the range (inclusive).
    pub fn start_key(&self) -> String {
        self.first.start_key()
    }

    /// The row key just past the range (exclusive); `None` when the range runs to the end.
    pub fn end_key(&self) -> Option<String> {
        self.last.end_key()
    }
}

const WORDS: usize = SHARD_COUNT as usize / 64;

/// Any set of shards: what a scanner owns under leases ([`crate::shard_lease`]), which need not
/// be one contiguous range. 128 bytes whatever it holds, so requests copy it freely.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ShardSet {
    bits: [u64; WORDS],
}

impl ShardSet {
    /// No shard.
    pub const EMPTY: ShardSet = ShardSet { bits: [0; WORDS] };
    /// Every shard.
    pub const ALL: ShardSet = ShardSet {
        bits: [u64::MAX; WORDS],
    };

    fn slot(shard: Shard) -> (usize, u64) {
        (usize::from(shard.0) / 64, 1 << (shard.0 % 64))
    }

    /// Adds `shard`; false if it was there already.
    pub fn insert(&mut self, shard: Shard) -> bool {
        let (w, b) = Self::slot(shard);
        let new = self.bits[w] & b == 0;
        self.bits[w] |= b;
        new
    }

    /// Removes `shard`; false if it was not there.
    #[cfg(any(test, feature = "testing"))]
    pub fn remove(&mut self, shard: Shard) -> bool {
        let (w, b) = Self::slot(shard);
        let had = self.bits[w] & b != 0;
        self.bits[w] &= !b;
        had
    }

    /// Whether `shard` is in the set.
    pub fn contains(&self, shard: Shard) -> bool {
        let (w, b) = Self::slot(shard);
        self.bits[w] & b != 0
    }

    /// How many shards the set holds.
    #[cfg(any(test, feature = "testing"))]
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set holds no shard.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// The shards in both sets.
    pub fn intersection(&self, other: &ShardSet) -> ShardSet {
        let mut out = *self;
        for (w, o) in out.bits.iter_mut().zip(other.bits) {
            *w &= o;
        }
        out
    }

    /// The shards of this set that `other` does not hold.
    pub fn difference(&self, other: &ShardSet) -> ShardSet {
        let mut out = *self;
        for (w, o) in out.bits.iter_mut().zip(other.bits) {
            *w &= !o;
        }
        out
    }

    /// The first shard of the set at or after `from`.
    pub fn next_from(&self, from: Shard) -> Option<Shard> {
        let (mut w, _) = Self::slot(from);
        let mut word = self.bits[w] & (u64::MAX << (from.0 % 64));
        loop {
            if word != 0 {
                return Some(Shard((w * 64) as u16 + word.trailing_zeros() as u16));
            }
            w += 1;
            if w == WORDS {
                return None;
            }
            word = self.bits[w];
        }
    }

    /// The shards in key order.
    pub fn iter(&self) -> impl Iterator<Item = Shard> + use<> {
        let set = *self;
        let mut next = set.next_from(Shard(0));
        std::iter::from_fn(move || {
            let s = next?;
            next = if s < Shard::LAST {
                set.next_from(Shard(s.0 + 1))
            } else {
                None
            };
            Some(s)
        })
    }

    /// The set as maximal contiguous ranges, in key order: how a scan that reads every row
    /// of its shards asks for as few row ranges as it can.
    pub fn runs(&self) -> impl Iterator<Item = ShardRange> + use<> {
        let mut shards = self.iter().peekable();
        std::iter::from_fn(move || {
            let first = shards.next()?;
            let mut last = first;
            while let Some(&s) = shards.peek() {
                if s.0 != last.0 + 1 {
                    break;
                }
                last = s;
                shards.next();
            }
            Some(ShardRange { first, last })
        })
    }
}

impl From<ShardRange> for ShardSet {
    fn from(range: ShardRange) -> Self {
        let mut set = ShardSet::EMPTY;
        for s in range.iter() {
            set.insert(s);
        }
        set
    }
}

impl FromIterator<Shard> for ShardSet {
    fn from_iter<I: IntoIterator<Item = Shard>>(iter: I) -> Self {
        let mut set = ShardSet::EMPTY;
        for s in iter {
            set.insert(s);
        }
        set
    }
}

/// `000-0ff,200,300-3ff`, or `none`: compact enough for a log line.
impl std::fmt::Display for ShardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, run) in self.runs().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if run.first == run.last {
                write!(f, "{}", run.first)?;
            } else {
                write!(f, "{run}")?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for ShardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardSet({self})")
    }
}

/// The smallest row key in `shard` of an id minted at or after `at`: ids minted earlier sort
/// before it, ids minted at or after it sort at or after it. A UUIDv7 begins with its
/// 48-bit millisecond time in twelve hex digits (`tttttttt-tttt-7…`), so the key's prefix is
/// that time.
pub fn minted_key(shard: Shard, at: Timestamp) -> String {
    let millis = u64::try_from(at.0).unwrap_or(0).min((1 << 48) - 1);
    format!("{shard}/{:08x}-{:04x}", millis >> 16, millis & 0xffff)
}

/// FNV-1a over the uuid bytes: stable across versions and platforms, which a key prefix must be.
pub(super) fn shard_of(u: &Uuid) -> Shard {
    let mut h: u32 = 0x811c_9dc5;
    for b in u.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let folded = h ^ (h >> 10) ^ (h >> 20) ^ (h >> 30);
    Shard((folded % u32::from(SHARD_COUNT)) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeId;

    #[test]
    fn minted_keys_bound_ids_by_the_time_they_were_minted() {
        let at = Timestamp(1_767_225_600_123);
        let id = ChangeId::mint_at(at);
        assert_eq!(id.minted_at(), Some(at));
        let shard = id.shard();
        assert!(minted_key(shard, at).as_str() <= id.as_str());
        assert!(minted_key(shard, Timestamp(at.0 + 1)).as_str() > id.as_str());
        let earlier = ChangeId::mint_at(Timestamp(at.0 - 1));
        assert!(earlier.as_str() < minted_key(earlier.shard(), at).as_str());
        assert!(minted_key(Shard(0), Timestamp(-5)) == "000/00000000-0000");
    }

    #[test]
    fn shard_ranges_partition_the_key_space() {
        for count in [1u16, 2, 3, 4, 7, 256, SHARD_COUNT] {
            let mut owned = vec![0u8; usize::from(SHARD_COUNT)];
            for i in 0..count {
                let r = ShardRange::for_member(i, count).unwrap();
                for s in r.iter() {
                    owned[usize::from(s.0)] += 1;
                }
            }
            assert!(owned.iter().all(|&n| n == 1), "count {count}: {owned:?}");
        }
        assert!(ShardRange::for_member(2, 2).is_err());
        assert!(ShardRange::for_member(0, 0).is_err());
        assert_eq!(ShardRange::ALL.end_key(), None);
        assert_eq!(
            ShardRange::for_member(0, 2).unwrap().end_key().as_deref(),
            Some("200/")
        );
    }

    #[test]
    fn shard_sets_hold_any_subset_and_list_it_as_runs() {
        assert_eq!(ShardSet::ALL.len(), usize::from(SHARD_COUNT));
        assert_eq!(ShardSet::ALL.to_string(), "000-3ff");
        assert_eq!(ShardSet::EMPTY.to_string(), "none");
        let mut set = ShardSet::from(ShardRange::for_member(0, 4).unwrap());
        assert_eq!(set.len(), 256);
        assert!(set.insert(Shard(0x200)));
        assert!(!set.insert(Shard(0x200)));
        assert!(set.insert(Shard::LAST));
        assert!(set.remove(Shard(0x10)));
        assert!(!set.remove(Shard(0x10)));
        assert_eq!(set.to_string(), "000-00f,011-0ff,200,3ff");
        assert_eq!(set.next_from(Shard(0x10)), Some(Shard(0x11)));
        assert_eq!(set.next_from(Shard(0x100)), Some(Shard(0x200)));
        assert_eq!(set.next_from(Shard(0x201)), Some(Shard::LAST));
        let iterated: Vec<_> = set.iter().collect();
        assert_eq!(iterated.len(), set.len());
        assert!(iterated.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(set.iter().collect::<ShardSet>(), set);
        let other: ShardSet = [Shard(0x200), Shard(1)].into_iter().collect();
        assert_eq!(set.intersection(&other), other);
        assert_eq!(set.difference(&other).len(), set.len() - 2);
        assert!(ShardSet::EMPTY.iter().next().is_none());
        assert_eq!(ShardSet::EMPTY.next_from(Shard(0)), None);
    }
}
