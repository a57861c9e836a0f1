//! Dead-lettering on the Pub/Sub emulator, beyond the queue conformance suite: where a
//! dead-lettered job actually ends up, and with what (I5: no silent drop).

use std::time::Duration;

use bytes::Bytes;
use tiersweep::queue::{DEAD_LETTER_REASON, FlowControl, JobQueue, Message, PubsubQueue};
use tiersweep_testkit::emulators::emulators;

const WAIT: Duration = Duration::from_secs(30);

fn job(tag: &str) -> Message {
    Message {
        data: Bytes::from(format!("{tag}-{}", uuid::Uuid::now_v7())),
        attributes: [("kind".to_owned(), tag.to_owned())].into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_reaches_the_dead_letter_topic_with_its_reason() {
    let e = emulators().await;
    let config = e.pubsub_config().await;
    let q = PubsubQueue::connect(&config).await.unwrap();
    let mut sub = q.subscribe(FlowControl::default()).await.unwrap();
    let sent = job("poison");
    q.publish(vec![sent.clone()]).await.unwrap();
    let d = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    q.dead_letter(d, "poison: not a cleanup job").await.unwrap();

    let dead = e.dead_letters(&config, 1, WAIT).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].data, sent.data,
        "the job's bytes are kept for an operator"
    );
    assert_eq!(
        dead[0]
            .attributes
            .get(DEAD_LETTER_REASON)
            .map(String::as_str),
        Some("poison: not a cleanup job")
    );
    assert_eq!(
        dead[0].attributes.get("kind").map(String::as_str),
        Some("poison")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_is_dead_lettered_by_the_subscription_policy() {
    let e = emulators().await;
    let config = e.pubsub_config().await;
    let q = PubsubQueue::connect(&config).await.unwrap();
    let mut sub = q.subscribe(FlowControl::default()).await.unwrap();
    let sent = job("failing");
    q.publish(vec![sent.clone()]).await.unwrap();
    // The fixture's policy allows 5 deliveries; nack each of them.
    let mut attempts = Vec::new();
    while attempts.len() < 5 {
        let d = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(d.message.data, sent.data);
        attempts.push(d.attempt);
        d.nack();
    }
    assert_eq!(
        attempts,
        vec![1, 2, 3, 4, 5],
        "the attempt count comes from Pub/Sub"
    );
    let dead = e.dead_letters(&config, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].data, sent.data);
    let again = tokio::time::timeout(Duration::from_secs(2), sub.next()).await;
    assert!(again.is_err(), "no sixth delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_without_a_dead_letter_policy_is_refused_at_connect() {
    let e = emulators().await;
    let mut config = e.pubsub_config().await;
    // The audit subscription has no dead-letter policy of its own.
    config.subscription = format!("{}-audit", config.dead_letter_topic);
    let err = PubsubQueue::connect(&config).await.unwrap_err();
    assert!(err.message.contains("dead-letter policy"), "{err}");
    assert!(
        err.target.contains(&config.subscription),
        "names the subscription: {err}"
    );

    config.subscription = "no-such-subscription".into();
    let err = PubsubQueue::connect(&config).await.unwrap_err();
    assert!(err.target.contains("no-such-subscription"), "{err}");
    assert!(
        !err.is_transient(),
        "a missing subscription is not worth retrying: {err}"
    );
}

/// `tiersweep dlq` on the emulator: a listing counts the dead letters by reason and
/// consumes none; a replay republishes exactly the chosen ones to the jobs topic, as they
/// were published, and removes only them; a purge removes what is older than its cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_replay_and_purge_round_trip() {
    use tiersweep::queue::dead_letters::{self, SnapshotOptions};
    let e = emulators().await;
    let config = e.pubsub_config().await;
    let q = PubsubQueue::connect(&config).await.unwrap();
    let mut sub = q.subscribe(FlowControl::default()).await.unwrap();
    let (bug, poison) = (job("bug"), job("poison"));
    q.publish(vec![bug.clone(), poison.clone()]).await.unwrap();
    for _ in 0..2 {
        let d = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let reason = if d.message.data == bug.data {
            "bug 42: fixed in 1.2"
        } else {
            "poison"
        };
        q.dead_letter(d, reason).await.unwrap();
    }
    // A connection per operation, as `tiersweep dlq` makes one per process.
    let connect = || PubsubQueue::connect_dead_letters(&config);
    let how = SnapshotOptions {
        quiet: Duration::from_secs(2),
        first: Duration::from_secs(5),
        ..SnapshotOptions::default()
    };
    // A snapshot that saw fewer than expected (a pull answered empty) is retried: what the
    // tools promise is that nothing is lost or consumed, not that one pull sees all.
    let list_until = |want: usize| {
        let connect = &connect;
        async move {
            let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
            loop {
                let listed = dead_letters::list(&connect().await.unwrap(), how)
                    .await
                    .unwrap();
                if listed.total == want || tokio::time::Instant::now() > give_up {
                    return listed;
                }
            }
        }
    };
    let listed = list_until(2).await;
    assert_eq!(listed.total, 2, "{listed:?}");
    assert_eq!(listed.by_reason["poison"].count, 1);
    assert!(
        listed.by_reason["bug 42: fixed in 1.2"].oldest.is_some(),
        "{listed:?}"
    );
    let again = list_until(2).await;
    assert_eq!(again.total, 2, "listing consumed nothing");

    // Retried for the same reason: a run that sees nothing settles nothing.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
    let replayed = loop {
        let r = dead_letters::replay(&connect().await.unwrap(), &q, "bug 42", how)
            .await
            .unwrap();
        if r.done > 0 || tokio::time::Instant::now() > give_up {
            break r;
        }
    };
    assert_eq!(replayed.done, 1, "{replayed:?}");
    let d = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.message, bug, "replayed as it was first published");
    d.ack();
    let left = list_until(1).await;
    assert_eq!(left.by_reason.keys().collect::<Vec<_>>(), ["poison"]);

    let future = tiersweep::model::Timestamp(i64::MAX);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
    let purged = loop {
        let p = dead_letters::purge(&connect().await.unwrap(), future, how)
            .await
            .unwrap();
        if p.done > 0 || tokio::time::Instant::now() > give_up {
            break p;
        }
    };
    assert_eq!(purged.done, 1, "{purged:?}");
    assert_eq!(list_until(0).await.total, 0);
}
