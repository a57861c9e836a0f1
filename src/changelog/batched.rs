//! A changelog wrapper that gathers a busy cleaner's per-job row reads, removals and
//! clock reads into batch calls.
//!
//! Every job a cleaner works on re-reads its row (the row, not the message, is the
//! authority), reads the changelog's time (to stamp a deferral, or to judge one) and, once
//! the change is converged, removes it: four Bigtable calls per change, the clock read
//! being two (the clock row's re-stamp and its read-back). With many jobs in flight, the
//! calls that arrive while a batch is on its way wait and leave together in the next one:
//! reads as one [`Changelog::get_many`] (one ReadRows over their keys), removals as one
//! [`Changelog::remove_many`] (one MutateRows), clock reads as one [`Changelog::now`].
//!
//! A clock read answers only callers that were waiting before it was sent, never one that
//! arrived while it was on its way: each caller gets a time the server read after it
//! asked, as its own call would have, so a deferral stamped from it still ends a whole
//! settle after the delete that preceded it (docs/design/deferral.md). Nothing waits
//! on a timer: a lone call leaves at once, so an idle cleaner pays no latency, and a busy
//! one's batches grow with its load, up to [`MAX_BATCH`] keys.
//!
//! Each batch runs in a task of its own, so a caller that is cancelled (a job abandoned at
//! shutdown) neither cancels the others' batch nor stalls the ones after it. A failed batch
//! fails each of its callers with the same error, and each retries as it would have
//! retried its own call. Every other method passes straight through.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::{Changelog, ChangelogEntry, ChangelogLayer};
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::model::{ChangeId, Timestamp};

/// The most keys one batch call carries.
pub const MAX_BATCH: usize = 256;

/// What one batch call answers for each key, in the order asked.
type BatchCall<V> = BoxFuture<'static, StoreResult<Vec<V>>>;

/// The callers waiting for the next batch, and whether a task is draining them.
struct Queue<K, V> {
    waiting: Vec<(K, oneshot::Sender<StoreResult<V>>)>,
    draining: bool,
}

/// One kind of batched call, keyed by `K` (a row, or nothing for the clock).
struct Lane<K, V> {
    op: &'static str,
    queue: Mutex<Queue<K, V>>,
    run: Box<dyn Fn(Vec<K>) -> BatchCall<V> + Send + Sync>,
}

impl<K: Clone + Send + 'static, V: Send + 'static> Lane<K, V> {
    fn new(
        op: &'static str,
        run: impl Fn(Vec<K>) -> BatchCall<V> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            op,
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                draining: false,
            }),
            run: Box::new(run),
        })
    }

    /// Queues `id` for the next batch (starting a draining task if none runs) and waits
    /// for its answer.
    async fn call(self: &Arc<Self>, id: K) -> StoreResult<V> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.waiting.push((id, reply));
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            tokio::spawn(self.clone().drain());
        }
        answer.await.unwrap_or_else(|_| {
            Err(self.error(
                ErrorKind::Transient,
                "the batch carrying this call ended without an answer".into(),
            ))
        })
    }

    /// Sends batches until no caller waits.
    async fn drain(self: Arc<Self>) {
        loop {
            let batch: Vec<_> = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if queue.waiting.is_empty() {
                    queue.draining = false;
                    return;
                }
                let n = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..n).collect()
            };
            let ids = batch.iter().map(|(id, _)| id.clone()).collect();
            match (self.run)(ids).await {
                Ok(answers) if answers.len() == batch.len() => {
                    for ((_, reply), answer) in batch.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Ok(answers) => {
                    let message =
                        format!("a batch of {} answered {} rows", batch.len(), answers.len());
                    for (_, reply) in batch {
                        let _ = reply.send(Err(self.error(ErrorKind::Transient, message.clone())));
                    }
                }
                Err(e) => {
                    for (_, reply) in batch {
                        let _ = reply.send(Err(self.error(e.kind, e.to_string())));
                    }
                }
            }
        }
    }

    fn error(&self, kind: ErrorKind, message: String) -> StoreError {
        StoreError::new(
            StoreKind::Changelog,
            self.op,
            "changelog batch",
            kind,
            message,
        )
    }
}

/// See the module documentation.
pub struct Batched {
    inner: Arc<dyn Changelog>,
    reads: Arc<Lane<ChangeId, Option<ChangelogEntry>>>,
    removals: Arc<Lane<ChangeId, ()>>,
    clock: Arc<Lane<(), Timestamp>>,
    /// The last time the clock lane answered, kept only under the mutant
    /// `ClockReadShared`, which answers each caller with the read before its own: the bug
    /// a cache of the changelog's time would be, as stale as the cleaner was idle.
    last_now: Mutex<Option<Timestamp>>,
}

impl std::fmt::Debug for Batched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Batched {
    /// Batches the changelog calls of concurrent callers into `inner`'s multi-row calls.
    pub fn new(inner: Arc<dyn Changelog>) -> Self {
        let reads = Lane::new("get_many", {
            let inner = inner.clone();
            move |ids: Vec<ChangeId>| {
                let inner = inner.clone();
                Box::pin(async move { inner.get_many(&ids).await }) as BatchCall<_>
            }
        });
        let removals = Lane::new("remove_many", {
            let inner = inner.clone();
            move |ids: Vec<ChangeId>| {
                let inner = inner.clone();
                Box::pin(async move {
                    inner.remove_many(&ids).await?;
                    Ok(vec![(); ids.len()])
                }) as BatchCall<_>
            }
        });
        let clock = Lane::new("now", {
            let inner = inner.clone();
            move |callers: Vec<()>| {
                let inner = inner.clone();
                Box::pin(async move {
                    let now = inner.now().await?;
                    Ok(vec![now; callers.len()])
                }) as BatchCall<_>
            }
        });
        Self {
            inner,
            reads,
            removals,
            clock,
            last_now: Mutex::new(None),
        }
    }
}

#[async_trait]
impl ChangelogLayer for Batched {
    fn inner(&self) -> &dyn Changelog {
        &*self.inner
    }
    /// Batched. A batch reads a row that does not decode as missing; only then is the row
    /// read again on its own, so that it is reported as malformed as `get` reports it (a
    /// missing row, a job for a change converged already, costs the same second read).
    async fn get(&self, id: &ChangeId) -> StoreResult<Option<ChangelogEntry>> {
        match self.reads.call(id.clone()).await? {
            Some(entry) => Ok(Some(entry)),
            None => self.inner.get(id).await,
        }
    }
    /// Batched: each id joins the next batch, and this returns once all of them landed.
    async fn remove_many(&self, ids: &[ChangeId]) -> StoreResult<()> {
        let calls = ids.iter().map(|id| self.removals.call(id.clone()));
        futures::future::try_join_all(calls).await.map(drop)
    }
    /// Batched: one clock read for every caller waiting when it leaves, none for one that
    /// arrives while it is on its way (see the module documentation).
    async fn now(&self) -> StoreResult<Timestamp> {
        let now = self.clock.call(()).await?;
        if crate::mutants::on(crate::mutants::Mutant::ClockReadShared) {
            let mut last = self.last_now.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(last.replace(now).unwrap_or(now));
        }
        Ok(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::MemoryChangelog;
    use crate::model::{ChangeRecord, ObjectPath, OwnerToken, Revision, Timestamp};
    use crate::stores::Stores;
    use crate::testing::faults::{Fault, Faults, Op, Rule};

    fn record(i: usize) -> ChangeRecord {
        let path = ObjectPath::new(format!("batched/{i}")).unwrap();
        let new = Revision::mint(&path);
        ChangeRecord::new(path, None, Some(new), OwnerToken::writer())
    }

    /// Calls made while a batch is on its way leave together in the next one: 64 reads and
    /// 64 removals of rows, started at once, cost a handful of calls, and each caller gets
    /// its own row's answer.
    #[tokio::test(start_paused = true)]
    async fn concurrent_calls_share_batches_and_get_their_own_answers() {
        let stores = Stores::in_memory(crate::clock::system());
        let faults = Faults::new([
            Rule::on(Op::Get, Fault::Delay(std::time::Duration::from_millis(10))),
            Rule::on(
                Op::RemoveMany,
                Fault::Delay(std::time::Duration::from_millis(10)),
            ),
        ]);
        let batched: Arc<dyn Changelog> = Arc::new(Batched::new(faults.wrap(&stores).changelog));
        let mut ids = Vec::new();
        for i in 0..64 {
            let id = ChangeId::mint();
            stores.changelog.record(&id, &record(i)).await.unwrap();
            ids.push((id, record(i).object));
        }
        let reads = ids.iter().map(|(id, object)| {
            let batched = batched.clone();
            async move {
                let entry = batched.get(id).await.unwrap().expect("the row is there");
                assert_eq!(&entry.id, id);
                assert_eq!(&entry.record.object, object);
            }
        });
        futures::future::join_all(reads).await;
        let removals = ids.iter().map(|(id, _)| {
            let batched = batched.clone();
            async move { batched.remove_many(std::slice::from_ref(id)).await.unwrap() }
        });
        futures::future::join_all(removals).await;
        for (id, _) in &ids {
            assert_eq!(stores.changelog.get(id).await.unwrap(), None);
        }
        let calls = faults.calls();
        let count = |op| calls.iter().filter(|c| **c == op).count();
        // On one thread all 64 queue before the draining task first runs: one call each.
        assert_eq!(count(Op::Get), 1, "64 concurrent reads: {calls:?}");
        assert_eq!(
            count(Op::RemoveMany),
            1,
            "64 concurrent removals: {calls:?}"
        );
    }

    /// A row that does not decode reads as missing in a batch; the wrapper reads it again
    /// on its own so the caller sees it reported as malformed, as `get` reports it.
    #[tokio::test]
    async fn a_malformed_row_is_reported_not_read_as_missing() {
        let memory = Arc::new(MemoryChangelog::new(crate::clock::system()));
        let id = ChangeId::mint();
        memory.insert_raw(id.as_str(), b"not a record".to_vec(), Timestamp(0));
        let batched: &dyn Changelog = &Batched::new(memory);
        let err = batched.get(&id).await.expect_err("a malformed row");
        assert_eq!(err.kind, ErrorKind::Malformed, "{err}");
        assert_eq!(batched.get(&ChangeId::mint()).await.unwrap(), None);
    }

    /// Reads the changelog's time, then takes 10 ms to answer: a read on its way after
    /// the server read the clock.
    #[derive(Debug)]
    struct AnswersLate {
        inner: Arc<dyn Changelog>,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl ChangelogLayer for AnswersLate {
        fn inner(&self) -> &dyn Changelog {
            &*self.inner
        }
        async fn now(&self) -> StoreResult<Timestamp> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let now = self.inner.now().await?;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            Ok(now)
        }
    }

    /// Clock reads asked for together share one call; one asked for while a read is on
    /// its way waits for the next, so nobody gets a time the server read before they asked
    /// (a deferral stamped from it would end its settle early).
    #[tokio::test(start_paused = true)]
    async fn clock_reads_share_a_call_but_never_one_read_before_they_asked() {
        let clock = Arc::new(crate::clock::TokioClock::new());
        let late = Arc::new(AnswersLate {
            inner: Arc::new(MemoryChangelog::new(clock.clone())),
            calls: Default::default(),
        });
        let batched: Arc<dyn Changelog> = Arc::new(Batched::new(late.clone()));
        let calls = || late.calls.load(std::sync::atomic::Ordering::SeqCst);
        let together = futures::future::join_all((0..16).map(|_| batched.now())).await;
        let first = together[0].as_ref().unwrap();
        assert!(together.iter().all(|t| t.as_ref().unwrap() == first), "{together:?}");
        assert_eq!(calls(), 1, "16 reads asked for together");

        let on_its_way = tokio::spawn({
            let batched = batched.clone();
            async move { batched.now().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let asked = crate::clock::Clock::now(&*clock);
        let after = batched.now().await.unwrap();
        let before = on_its_way.await.unwrap().unwrap();
        assert!(before < asked, "the read on its way was made before: {before:?} {asked:?}");
        assert!(after >= asked, "answered {after:?}, asked at {asked:?}");
        assert_eq!(calls(), 3, "the later caller waited for a read of its own");
    }

    /// A failed batch fails each of its callers, who may retry.
    #[tokio::test]
    async fn a_failed_batch_fails_its_callers() {
        let stores = Stores::in_memory(crate::clock::system());
        let faults = Faults::new([Rule::once(Op::Get, Fault::Fail)]);
        let batched: &dyn Changelog = &Batched::new(faults.wrap(&stores).changelog);
        let id = ChangeId::mint();
        stores.changelog.record(&id, &record(0)).await.unwrap();
        assert!(batched.get(&id).await.is_err());
        assert!(
            batched.get(&id).await.unwrap().is_some(),
            "the next batch answers"
        );
    }
}
