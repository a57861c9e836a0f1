//! Job-queue conformance: at-least-once delivery, redelivery of unsettled jobs with a
//! growing attempt count, dead-lettering, and flow control.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

use crate::queue::{Delivery, FlowControl, JobQueue, Message, Subscription};

/// Long enough for an emulator's redelivery, short enough to keep the suite quick.
const WAIT: Duration = Duration::from_secs(30);

fn message(n: usize) -> Message {
    Message {
        data: Bytes::from(format!("job-{n}-{}", uuid::Uuid::now_v7())),
        attributes: BTreeMap::from([("n".to_owned(), n.to_string())]),
    }
}

async fn next(sub: &mut Box<dyn Subscription>) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a delivery within the wait")
        .expect("subscription open")
        .expect("pull succeeds")
}

pub async fn published_jobs_are_delivered_and_acked(q: &dyn JobQueue) {
    let mut sub = q.subscribe(FlowControl::default()).await.unwrap();
    let sent: Vec<Message> = (0..3).map(message).collect();
    q.publish(sent.clone()).await.unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        let d = next(&mut sub).await;
        assert_eq!(d.attempt, 1);
        assert!(!d.message_id.is_empty());
        let original = sent
            .iter()
            .find(|m| m.data == d.message.data)
            .expect("a message we sent");
        for (k, v) in &original.attributes {
            assert_eq!(
                d.message.attributes.get(k),
                Some(v),
                "attribute {k} survives"
            );
        }
        got.insert(d.message.data.clone());
        d.ack();
    }
    assert_eq!(got.len(), 3);
    let nothing = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(nothing.is_err(), "acked jobs are not redelivered");
}

/// Stopping and closing a subscription — idle, holding a delivery, twice over, or closed
/// without a stop — ends it cleanly, and what was settled before stays settled. (A
/// shutdown that completes at its first poll was once polled again at `close`: a panic
/// in every cleaner on SIGTERM.)
pub async fn a_subscription_stops_and_closes_cleanly_in_any_state(q: &dyn JobQueue) {
    let mut idle = q.subscribe(FlowControl::default()).await.unwrap();
    idle.stop_pulling().await;
    idle.stop_pulling().await;
    idle.close().await;
    idle.close().await;

    let mut busy = q.subscribe(FlowControl::default()).await.unwrap();
    q.publish(vec![message(0)]).await.unwrap();
    let d = next(&mut busy).await;
    busy.stop_pulling().await;
    d.ack();
    busy.close().await;

    let mut unstopped = q.subscribe(FlowControl::default()).await.unwrap();
    unstopped.close().await;

    let mut after = q.subscribe(FlowControl::default()).await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(500), after.next()).await;
    assert!(
        !matches!(nothing, Ok(Some(Ok(_)))),
        "the job acked while stopping is not redelivered"
    );
    after.close().await;
}

pub async fn nacked_and_dropped_jobs_are_redelivered(q: &dyn JobQueue) {
    let mut sub = q.subscribe(FlowControl::default()).await.unwrap();
    let m = message(0);
    q.publish(vec![m.clone()]).await.unwrap();
    let first = next(&mut sub).await;
    assert_eq!(first.message.data, m.data);
    first.nack();
    let second = next(&mut sub).await;
    assert_eq!(second.message.data, m.data);
    assert!(second.attempt >= 2, "attempt counts up: {}", second.attempt);
    drop(second); // a worker that died mid-job
    let third = next(&mut sub).await;
    assert_eq!(third.message.data, m.data);
    assert!(third.attempt >= 3);
    third.ack();
}

pub async fn dead_lettered_jobs_are_not_redelivered(q: &dyn JobQueue) {
    let mut sub = q.subscribe(FlowControl::default()).await.unwrap();
    q.publish(vec![message(0)]).await.unwrap();
    let d = next(&mut sub).await;
    q.dead_letter(d, "poison: test").await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
    assert!(nothing.is_err(), "a dead-lettered job is settled");
}

pub async fn flow_control_bounds_outstanding(q: &dyn JobQueue) {
    let mut sub = q
        .subscribe(FlowControl {
            max_outstanding: 2,
            ..FlowControl::default()
        })
        .await
        .unwrap();
    q.publish((0..3).map(message).collect()).await.unwrap();
    let a = next(&mut sub).await;
    let b = next(&mut sub).await;
    let blocked = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(
        blocked.is_err(),
        "a third delivery waits while two are unsettled"
    );
    a.ack();
    let c = next(&mut sub).await;
    b.ack();
    c.ack();
}
