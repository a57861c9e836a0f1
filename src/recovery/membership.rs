//! How a scanner process holds its shards under leases ([`crate::shard_lease`]): a keeper that
//! announces the member, renews what it holds, and rebalances towards an equal share, and
//! the [`Assignment`] it hands the scanner.
//!
//! Every `tick` (a quarter of the lease period) the keeper
//! 1. renews each lease it holds and announces the member;
//! 2. reads every lease and member, counts the live members (announced within the lease
//!    TTL, two thirds of the period), and computes its share, `ceil(shards / members)`;
//! 3. releases what it holds beyond the share (highest shards first), or takes free and
//!    expired leases up to it, starting at a point of the shard space derived from its id
//!    so that joiners do not all contend for the same leases.
//!
//! So a member that joins has its share within two ticks (the others release at their next
//! tick, it takes at its next), and the shards of one that dies are taken within the TTL
//! plus a tick: 11/12 of a lease period, so **within one lease period**.
//!
//! **When a holder stops.** A lease renewed by a call *sent* at local instant `t` is used
//! until `t + 0.9 × TTL` by this process's monotonic clock, whatever the response says about
//! when it landed: the server stamped it no earlier than it was sent, and others take it
//! only once its stamp is a full TTL old in the server's time. So a holder stops reading a
//! shard before anyone else may take it, as long as its clock's *rate* is within 10 % of the
//! server's (offsets do not matter: nothing here compares this clock with another). A
//! process that freezes between checking its assignment and reading (a long GC pause, a
//! suspended VM) can read a shard someone else now holds; that costs a duplicate read and
//! lost claims, never safety ([`crate::shard_lease`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::StoreResult;
use crate::shard_lease::{Kept, ShardLease, ShardLeaseTable, ShardLeases, MemberId, Taken};
use crate::model::{SHARD_COUNT, Shard, ShardSet, Timestamp};
use crate::telemetry::metrics::METRICS;

/// Lease writes in flight at once.
const CONCURRENCY: usize = 32;

/// A member dead this many TTLs (no announcement) has its row deleted by whoever sees it.
const FORGET_AFTER_TTLS: u32 = 20;

/// The shards a scanner may read, and until when.
#[derive(Debug, Clone)]
pub struct Assignment {
    held: BTreeMap<Shard, Instant>,
    /// The keeper's lease period: a shard let go by one member is held by the next within
    /// one ([`Self::handover`]).
    period: Duration,
}

impl Assignment {
    /// The shards whose leases are still valid at `now`.
    pub fn valid_at(&self, now: Instant) -> ShardSet {
        self.held
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(s, _)| *s)
            .collect()
    }

    /// The longest a shard goes unheld when it changes hands: its old holder stops reading
    /// it before letting it go (or before its lease can end), and the new one takes it
    /// within a lease period.
    pub(crate) fn handover(&self) -> Duration {
        self.period
    }
}

#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    /// Until when this process may read the shard (see the module doc).
    valid_until: Instant,
}

/// What one tick did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Live members seen.
    pub members: usize,
    /// Shards each member should hold: the total over the members, rounded up.
    pub share: usize,
    /// Shards this member holds after the tick.
    pub held: usize,
    /// Shards acquired this tick.
    pub acquired: usize,
    /// Shards released this tick.
    pub released: usize,
    /// Leases found taken by another member since this one renewed them.
    pub lost: usize,
}

/// Holds a member's leases; see the module doc.
#[derive(Debug)]
pub struct LeaseKeeper {
    leases: Arc<dyn ShardLeases>,
    me: MemberId,
    period: Duration,
    held: BTreeMap<Shard, Held>,
    tx: watch::Sender<Assignment>,
}

impl LeaseKeeper {
    /// A keeper for `me` with leases of `period` (see [`Self::ttl`]); the receiver follows
    /// its assignment.
    pub fn new(
        leases: Arc<dyn ShardLeases>,
        me: MemberId,
        period: Duration,
    ) -> (Self, watch::Receiver<Assignment>) {
        let (tx, rx) = watch::channel(Assignment {
            held: BTreeMap::new(),
            period,
        });
        let keeper = Self {
            leases,
            me,
            period,
            held: BTreeMap::new(),
            tx,
        };
        (keeper, rx)
    }

    /// This member's id.
    #[cfg(any(test, feature = "testing"))]
    pub fn member(&self) -> &MemberId {
        &self.me
    }

    /// How long an unrenewed lease lasts ([`ttl_of`]).
    pub fn ttl(&self) -> Duration {
        ttl_of(self.period)
    }

    /// How often the keeper renews and rebalances: a quarter of the period.
    pub fn tick_every(&self) -> Duration {
        self.period / 4
    }

    /// The shards it holds now.
    #[cfg(any(test, feature = "testing"))]
    pub fn held(&self) -> ShardSet {
        self.held.keys().copied().collect()
    }

    fn valid_for(&self) -> Duration {
        if crate::mutants::on(crate::mutants::Mutant::LeaseUsedPastTtl) {
            return self.ttl() * 3 / 2;
        }
        self.ttl() * 9 / 10
    }

    fn publish(&self) {
        let held = self.held.iter().map(|(s, h)| (*s, h.valid_until)).collect();
        self.tx.send_replace(Assignment {
            held,
            period: self.period,
        });
    }

    /// One round of announce, renew, read and rebalance.
    pub async fn tick(&mut self) -> StoreResult<Tick> {
        let mut tick = Tick::default();
        let sent = Instant::now();
        let held: Vec<(Shard, u64)> = self.held.iter().map(|(s, h)| (*s, h.epoch)).collect();
        let renewals: Vec<(Shard, StoreResult<Kept>)> = futures::stream::iter(held)
            .map(|(shard, epoch)| {
                let (leases, me) = (self.leases.clone(), self.me.clone());
                async move { (shard, leases.renew(shard, epoch, &me).await) }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let valid_until = sent + self.valid_for();
        // Renewals first: a failed announcement must not cost the leases held.
        let mut error = self.leases.announce(&self.me).await.err();
        for (shard, renewal) in renewals {
            match renewal {
                Ok(Kept::Done) => {
                    if let Some(h) = self.held.get_mut(&shard) {
                        h.valid_until = valid_until;
                    }
                }
                Ok(Kept::NotHeld) => {
                    self.held.remove(&shard);
                    tick.lost += 1;
                }
                // Not renewed: it lapses at its old validity unless a later tick renews it.
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        let now = Instant::now();
        self.held.retain(|_, h| h.valid_until > now);
        self.publish();
        METRICS.leases_lost.add(tick.lost as u64);
        if tick.lost > 0 {
            tracing::warn!(member = %self.me, lost = tick.lost,
                "leases taken by another member since this one renewed them (it stalled)");
        }
        if let Some(e) = error {
            return Err(e);
        }
        let table = self.leases.read().await?;
        self.rebalance(&table, &mut tick).await?;
        tick.held = self.held.len();
        self.publish();
        Ok(tick)
    }

    async fn rebalance(&mut self, table: &ShardLeaseTable, tick: &mut Tick) -> StoreResult<()> {
        let ttl = self.ttl();
        let expired_before = table.now.saturating_sub(ttl);
        let mut members = 0;
        for m in &table.members {
            if m.id == self.me || m.stamp >= expired_before {
                members += 1;
            } else if m.stamp < table.now.saturating_sub(ttl * FORGET_AFTER_TTLS) {
                self.leases
                    .forget(&m.id, table.now.saturating_sub(ttl * FORGET_AFTER_TTLS))
                    .await?;
            }
        }
        let members = members.max(1);
        let share = usize::from(SHARD_COUNT).div_ceil(members);
        tick.members = members;
        tick.share = share;
        for (key, reason) in &table.malformed {
            tracing::error!(row = %key, %reason,
                "malformed lease row left in place: its shard is not scanned until it is deleted");
        }
        // A lease the table shows held by this member but not recorded here (an
        // acquisition that failed with an error after it landed) is not used: this process
        // cannot know when it was stamped. It expires and is taken again.
        if self.held.len() > share {
            return self.release_excess(self.held.len() - share, tick).await;
        }
        let wanted = share - self.held.len();
        if wanted == 0 {
            return Ok(());
        }
        self.acquire(table, wanted, expired_before, tick).await
    }

    /// Gives up `excess` of the held leases (the last ones): the scanner stops reading
    /// their shards before they are released, so before anyone else may take them.
    async fn release_excess(&mut self, excess: usize, tick: &mut Tick) -> StoreResult<()> {
        let give_up: Vec<(Shard, Held)> = self
            .held
            .iter()
            .rev()
            .take(excess)
            .map(|(s, h)| (*s, *h))
            .collect();
        for (shard, _) in &give_up {
            self.held.remove(shard);
        }
        // The scanner stops reading them before anyone else may take them.
        self.publish();
        let releases: Vec<StoreResult<Kept>> = futures::stream::iter(give_up)
            .map(|(shard, h)| {
                let (leases, me) = (self.leases.clone(), self.me.clone());
                async move { leases.release(shard, h.epoch, &me).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for r in releases {
            r?;
            tick.released += 1;
            METRICS.leases_released.inc();
        }
        Ok(())
    }

    /// Tries for up to `wanted` leases that are free or expired, starting at this
    /// member's own place in the ring so that members spread out.
    async fn acquire(
        &mut self,
        table: &ShardLeaseTable,
        wanted: usize,
        expired_before: crate::model::Timestamp,
        tick: &mut Tick,
    ) -> StoreResult<()> {
        let start = usize::from(start_of(&self.me));
        let n = usize::from(SHARD_COUNT);
        let candidates: Vec<ShardLease> = (0..n)
            .map(|i| &table.leases[(start + i) % n])
            .filter(|l| !self.held.contains_key(&l.shard))
            .filter(|l| {
                l.holder.is_none()
                    || (l.stamp < expired_before
                        && !crate::mutants::on(crate::mutants::Mutant::ExpiredLeasesKept))
            })
            .take(wanted)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let sent = Instant::now();
        let taken: Vec<(Shard, StoreResult<Taken>)> = futures::stream::iter(candidates)
            .map(|lease| {
                let (leases, me) = (self.leases.clone(), self.me.clone());
                async move {
                    (
                        lease.shard,
                        leases.acquire(&lease, &me, expired_before).await,
                    )
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let valid_until = sent + self.valid_for();
        let mut error = None;
        for (shard, t) in taken {
            match t {
                Ok(Taken::Won { epoch }) => {
                    self.held.insert(shard, Held { epoch, valid_until });
                    tick.acquired += 1;
                    METRICS.leases_acquired.inc();
                }
                Ok(Taken::Lost) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Releases every lease and deletes the member row: its shards are taken at once by
    /// the others' next tick instead of after the TTL.
    pub async fn stop(&mut self) -> StoreResult<()> {
        let held = std::mem::take(&mut self.held);
        self.publish();
        for (shard, h) in held {
            self.leases.release(shard, h.epoch, &self.me).await?;
            METRICS.leases_released.inc();
        }
        self.leases.depart(&self.me).await
    }

    /// Ticks until cancelled, then [`stop`](Self::stop)s. Logs what changed.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut last = Tick::default();
        while !cancel.is_cancelled() {
            match self.tick().await {
                Ok(t) => {
                    if (t.members, t.held) != (last.members, last.held) || t.lost > 0 {
                        tracing::info!(member = %self.me, members = t.members, share = t.share,
                            held = t.held, acquired = t.acquired, released = t.released,
                            "shard leases");
                    }
                    last = t;
                }
                Err(e) => tracing::warn!(member = %self.me, error = %e,
                    "lease tick failed; held leases lapse unless the next one renews them"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.tick_every()) => {}
            }
        }
        match self.stop().await {
            Ok(()) => tracing::info!(member = %self.me, "released every shard lease"),
            Err(e) => tracing::warn!(member = %self.me, error = %e,
                "could not release every lease on the way out; they expire within a lease period"),
        }
    }
}

/// How long an unrenewed lease of `period` lasts: two thirds of it, so that with the tick
/// that notices its expiry a takeover takes at most 11/12 of the period.
pub fn ttl_of(period: Duration) -> Duration {
    period * 2 / 3
}

/// Who holds what, as `tiersweep status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LeaseSummary {
    /// Members announced within the TTL, with the shards each holds unexpired.
    pub members: Vec<(String, usize)>,
    /// Shards whose lease is held and unexpired.
    pub held: usize,
    /// Shards nobody holds now (free, or its holder stopped renewing): no scanner reads
    /// them until one takes the lease.
    pub unheld: usize,
    /// Lease rows that do not decode (their shards are not scanned).
    pub malformed: usize,
}

/// Reads the lease table and summarises it for leases of `period`, judged by `now` (an
/// operator's read-only view: it does not write the clock row that gives the server's time).
pub async fn read_summary(
    leases: &dyn ShardLeases,
    now: Timestamp,
    period: Duration,
) -> StoreResult<LeaseSummary> {
    Ok(summary(&leases.read_at(now).await?, period))
}

/// Summarises `table` for leases of `period`.
pub fn summary(table: &ShardLeaseTable, period: Duration) -> LeaseSummary {
    let expired_before = table.now.saturating_sub(ttl_of(period));
    let mut held_by: BTreeMap<&MemberId, usize> = table
        .members
        .iter()
        .filter(|m| m.stamp >= expired_before)
        .map(|m| (&m.id, 0))
        .collect();
    let mut held = 0;
    for lease in &table.leases {
        if let Some(h) = &lease.holder
            && lease.stamp >= expired_before
        {
            held += 1;
            *held_by.entry(h).or_default() += 1;
        }
    }
    LeaseSummary {
        members: held_by
            .into_iter()
            .map(|(m, n)| (m.to_string(), n))
            .collect(),
        held,
        unheld: table.leases.len() - held,
        malformed: table.malformed.len(),
    }
}

/// Where in the shard space a member starts looking for leases to take: from its id, so
/// that members joining together mostly try different leases.
fn start_of(member: &MemberId) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in member.as_str().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(SHARD_COUNT)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard_lease::Member;
    use crate::model::Timestamp;

    #[test]
    fn the_summary_counts_only_unexpired_leases_and_live_members() {
        let period = Duration::from_secs(30);
        let now = Timestamp(1_000_000);
        let (a, b) = (MemberId::parse("a").unwrap(), MemberId::parse("b").unwrap());
        let mut leases: Vec<ShardLease> = (0..SHARD_COUNT)
            .map(|s| ShardLease::unwritten(Shard(s)))
            .collect();
        // a holds 3 fresh leases; b held one whose stamp is a TTL old (expired).
        for lease in leases.iter_mut().take(3) {
            lease.holder = Some(a.clone());
            lease.epoch = 1;
            lease.stamp = now;
        }
        leases[9] = ShardLease {
            holder: Some(b.clone()),
            epoch: 4,
            stamp: now
                .saturating_sub(ttl_of(period))
                .saturating_sub(Duration::from_millis(1)),
            ..leases[9].clone()
        };
        let table = ShardLeaseTable {
            now,
            leases,
            members: vec![
                Member { id: a, stamp: now },
                Member {
                    id: b,
                    stamp: Timestamp(0),
                },
            ],
            malformed: vec![("!lease/zzz".into(), "bad".into())],
        };
        let s = summary(&table, period);
        assert_eq!(s.members, vec![("a".to_owned(), 3)]);
        assert_eq!((s.held, s.unheld, s.malformed), (3, 1021, 1));
    }
}
