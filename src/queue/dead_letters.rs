//! The operator's tools for dead letters (`tiersweep dlq`): list them by reason, replay
//! them to the jobs topic after a fix, purge old ones.
//!
//! Each reads a *snapshot* of the dead-letter subscription: it pulls until the subscription
//! has been quiet for a moment (or it holds `limit` messages), holding every delivery
//! unsettled meanwhile so none comes back within the same snapshot, and then settles each:
//! `list` nacks all (nothing is consumed), `replay` acks exactly those it republished (after
//! the publish succeeded), `purge` acks exactly the old ones. A replayed job is a job like
//! any other: a cleaner verifies it against the changelog, so replaying a stale or forged
//! one converges nothing that is not due.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{
    DEAD_LETTER_DROPPED, DEAD_LETTER_REASON, DEAD_LETTER_SOURCE, Delivery, FlowControl, JobQueue,
    Message,
};
use crate::error::StoreResult;
use crate::model::Timestamp;

/// How a snapshot is taken.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotOptions {
    /// The snapshot ends once no delivery came for this long.
    pub quiet: Duration,
    /// How long to wait for the first delivery: a streaming pull takes a moment to start.
    pub first: Duration,
    /// At most this many dead letters are held (and reported, replayed or purged) at once.
    pub limit: usize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            quiet: Duration::from_secs(3),
            first: Duration::from_secs(5),
            limit: 10_000,
        }
    }
}

/// Dead letters by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// Dead letters seen.
    pub total: usize,
    /// Counts by reason.
    pub by_reason: BTreeMap<String, ReasonCount>,
    /// The snapshot stopped at its limit: there are more.
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
/// How many dead letters carry one reason, and the oldest.
pub struct ReasonCount {
    /// How many.
    pub count: usize,
    /// The oldest one's publish time (when it was dead-lettered).
    pub oldest: Option<Timestamp>,
}

/// The reason a dead letter carries; Pub/Sub's own forwarding (a cleaner that never got to
/// say why) carries none.
pub fn reason_of(m: &Message) -> &str {
    m.attributes
        .get(DEAD_LETTER_REASON)
        .map_or("(none: forwarded by the subscription's policy)", |r| {
            r.as_str()
        })
}

/// The message a dead letter copies, as it was published to the jobs topic.
pub fn original_of(m: &Message) -> Message {
    let mut original = m.clone();
    for key in [DEAD_LETTER_REASON, DEAD_LETTER_SOURCE, DEAD_LETTER_DROPPED] {
        original.attributes.remove(key);
    }
    original
}

/// The deliveries held, whether the limit cut the snapshot short, and the subscription to
/// [`close`](super::Subscription::close) once they are settled.
type Held = (Vec<Delivery>, bool, Box<dyn super::Subscription>);

async fn snapshot(dlq: &dyn JobQueue, how: SnapshotOptions) -> StoreResult<Held> {
    let limit = how.limit.max(1);
    let mut sub = dlq
        .subscribe(FlowControl {
            max_outstanding: limit,
            ..FlowControl::default()
        })
        .await?;
    let mut held = Vec::new();
    while held.len() < limit {
        let wait = if held.is_empty() {
            how.first.max(how.quiet)
        } else {
            how.quiet
        };
        match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(Ok(d))) => held.push(d),
            Ok(Some(Err(e))) => {
                // Nothing is settled on an error: every held delivery goes back unacked.
                drop(held);
                sub.close().await;
                return Err(e);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let truncated = held.len() >= limit;
    // Before anything is settled: a nacked message must not come back to this stream.
    sub.stop_pulling().await;
    Ok((held, truncated, sub))
}

/// Counts the dead letters by reason; consumes nothing.
pub async fn list(dlq: &dyn JobQueue, how: SnapshotOptions) -> StoreResult<Listing> {
    let (held, truncated, mut sub) = snapshot(dlq, how).await?;
    let mut listing = Listing {
        total: held.len(),
        truncated,
        ..Listing::default()
    };
    for d in &held {
        let entry = listing
            .by_reason
            .entry(reason_of(&d.message).to_owned())
            .or_default();
        entry.count += 1;
        entry.oldest = match (entry.oldest, d.published) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    for d in held {
        d.nack();
    }
    sub.close().await;
    Ok(listing)
}

/// What a replay or purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Settled {
    /// Republished (replay) or deleted (purge), and acked.
    pub done: usize,
    /// Left in the dead-letter subscription.
    pub left: usize,
    /// The snapshot stopped at its limit: more were left unread.
    pub truncated: bool,
}

/// Republishes to `jobs` the dead letters whose reason contains `filter` (all when empty),
/// without their dead-letter attributes, and acks exactly those once the publish has
/// succeeded. A failed publish acks nothing.
pub async fn replay(
    dlq: &dyn JobQueue,
    jobs: &dyn JobQueue,
    filter: &str,
    how: SnapshotOptions,
) -> StoreResult<Settled> {
    let (held, truncated, mut sub) = snapshot(dlq, how).await?;
    let (chosen, rest): (Vec<Delivery>, Vec<Delivery>) = held
        .into_iter()
        .partition(|d| reason_of(&d.message).contains(filter));
    let left = rest.len();
    for d in rest {
        d.nack();
    }
    let published = jobs
        .publish(chosen.iter().map(|d| original_of(&d.message)).collect())
        .await;
    let done = chosen.len();
    match published {
        Ok(()) => chosen.into_iter().for_each(Delivery::ack),
        Err(e) => {
            chosen.into_iter().for_each(Delivery::nack);
            sub.close().await;
            return Err(e);
        }
    }
    sub.close().await;
    Ok(Settled {
        done,
        left,
        truncated,
    })
}

/// Acks (deletes) the dead letters published before `before`; leaves the rest.
pub async fn purge(dlq: &dyn JobQueue, before: Timestamp, how: SnapshotOptions) -> StoreResult<Settled> {
    let (held, truncated, mut sub) = snapshot(dlq, how).await?;
    let mut out = Settled {
        truncated,
        ..Settled::default()
    };
    for d in held {
        if d.published.is_some_and(|p| p < before) {
            out.done += 1;
            d.ack();
        } else {
            out.left += 1;
            d.nack();
        }
    }
    sub.close().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MemoryQueue;

    fn dead(reason: &str, data: &'static str) -> Message {
        let mut m = Message {
            data: bytes::Bytes::from_static(data.as_bytes()),
            attributes: BTreeMap::from([("traceparent".to_owned(), "00-x".to_owned())]),
        };
        m = m.dead_letter_copy(reason, "m-1");
        m
    }

    fn quick() -> SnapshotOptions {
        SnapshotOptions {
            quiet: Duration::from_millis(200),
            first: Duration::from_millis(200),
            limit: 100,
        }
    }

    async fn drain(q: &MemoryQueue) -> Vec<Message> {
        let (held, _, _) = snapshot(q, quick()).await.unwrap();
        held.into_iter()
            .map(|d| {
                let m = d.message.clone();
                d.ack();
                m
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn list_counts_by_reason_and_consumes_nothing() {
        let dlq = MemoryQueue::new(100, 1000);
        dlq.publish(vec![
            dead("poison", "a"),
            dead("poison", "b"),
            dead("timeout", "c"),
        ])
        .await
        .unwrap();
        let first = list(&dlq, quick()).await.unwrap();
        assert_eq!(first.total, 3);
        assert_eq!(first.by_reason["poison"].count, 2);
        assert!(first.by_reason["timeout"].oldest.is_some());
        tokio::time::sleep(Duration::from_secs(30)).await;
        let again = list(&dlq, quick()).await.unwrap();
        assert_eq!(again.total, 3, "listing consumed nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn replay_republishes_the_originals_it_chose_and_acks_only_them() {
        let (dlq, jobs) = (MemoryQueue::new(100, 1000), MemoryQueue::new(100, 5));
        dlq.publish(vec![
            dead("poison", "a"),
            dead("bug 123", "b"),
            dead("bug 123", "c"),
        ])
        .await
        .unwrap();
        let done = replay(&dlq, &jobs, "bug", quick()).await.unwrap();
        assert_eq!((done.done, done.left), (2, 1));
        let replayed = drain(&jobs).await;
        let mut data: Vec<_> = replayed.iter().map(|m| m.data.clone()).collect();
        data.sort();
        assert_eq!(data, ["b", "c"]);
        for m in &replayed {
            assert_eq!(
                m.attributes.keys().collect::<Vec<_>>(),
                ["traceparent"],
                "the original's attributes, without the dead-letter ones"
            );
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        let left = list(&dlq, quick()).await.unwrap();
        assert_eq!(left.total, 1);
        assert!(left.by_reason.contains_key("poison"));
    }

    /// A jobs topic that refuses every publish.
    #[derive(Debug)]
    struct Refusing;

    #[async_trait::async_trait]
    impl JobQueue for Refusing {
        async fn publish(&self, _: Vec<Message>) -> StoreResult<()> {
            Err(crate::error::StoreError::new(
                crate::error::StoreKind::Queue,
                "publish",
                "jobs",
                crate::error::ErrorKind::Transient,
                "refused",
            ))
        }
        async fn subscribe(
            &self,
            _: FlowControl,
        ) -> StoreResult<Box<dyn super::super::Subscription>> {
            self.publish(vec![]).await.map(|()| unreachable!())
        }
        fn destination(&self) -> String {
            "jobs".into()
        }
        async fn dead_letter(&self, _: Delivery, _: &str) -> StoreResult<()> {
            self.publish(vec![]).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_replay_acks_nothing() {
        let dlq = MemoryQueue::new(100, 1000);
        dlq.publish(vec![dead("bug", "a"), dead("bug", "b")])
            .await
            .unwrap();
        assert!(replay(&dlq, &Refusing, "bug", quick()).await.is_err());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            list(&dlq, quick()).await.unwrap().total,
            2,
            "both are still there"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn purge_deletes_only_what_is_older() {
        let dlq = MemoryQueue::new(100, 1000);
        dlq.publish(vec![dead("old", "a")]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        dlq.publish(vec![dead("new", "b")]).await.unwrap();
        let old = list(&dlq, quick()).await.unwrap().by_reason["old"].oldest;
        let cut = old
            .expect("a publish time")
            .saturating_add(Duration::from_secs(1800));
        let out = purge(&dlq, cut, quick()).await.unwrap();
        assert_eq!((out.done, out.left), (1, 1));
        tokio::time::sleep(Duration::from_secs(30)).await;
        let left = list(&dlq, quick()).await.unwrap();
        assert_eq!(left.by_reason.keys().collect::<Vec<_>>(), ["new"]);
    }
}
