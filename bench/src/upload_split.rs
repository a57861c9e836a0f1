//! How an LT store's upload time splits around its last byte: the figure the gated write
//! path's gain rests on. The gate can hide the change's record only behind the part of an
//! upload that precedes its last byte; what follows the last byte (the store finalizing the
//! object) stays on the write's path.
//!
//! Measured directly: a sized upload whose last chunk is held until the rest has had time to
//! leave, timed from the release of that chunk to the store's answer ("after the last
//! byte"), against the same upload sent at once ("whole"). Run on the emulators by
//! `tiersweep bench`; pointed at real GCS it would replace the cloud model's assumption.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use tiersweep::lt::{ByteStream, Declared, LtStore};
use tiersweep::model::{ObjectMeta, ObjectPath, Revision};

/// The split, in microseconds (medians over the samples).
#[derive(Debug, Clone, Serialize)]
pub struct UploadSplit {
    /// Bytes per upload.
    pub bytes: usize,
    pub samples: usize,
    /// An upload sent at once, start to answer.
    pub whole_p50_us: u64,
    /// An upload whose last chunk was held: from its release to the answer.
    pub after_last_byte_p50_us: u64,
}

/// How long the rest of a held upload is given to leave before its last chunk is released.
const HEAD_START: Duration = Duration::from_millis(20);

/// The last chunk held back: as the writer's gate holds a byte body's.
const TAIL: usize = 4 * 1024;

/// Measures `n` uploads of `bytes` each way under `run/`, deleting them after.
pub async fn measure(
    lt: &dyn LtStore,
    run: &str,
    bytes: usize,
    n: usize,
) -> tiersweep::error::StoreResult<UploadSplit> {
    let body = Bytes::from(vec![b'U'; bytes.max(TAIL)]);
    let declared = Declared::of(&body);
    let meta = ObjectMeta::default();
    let (mut whole, mut after) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let path = ObjectPath::new(format!("bench/{run}/split{i:05}")).expect("valid path");
        let (a, b) = (Revision::mint(&path), Revision::mint(&path));

        let t = Instant::now();
        lt.put_stream_sized(&a, chunks(&body, None), declared, &meta)
            .await?;
        whole.push(t.elapsed().as_micros() as u64);

        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let put = lt.put_stream_sized(&b, chunks(&body, Some(released)), declared, &meta);
        tokio::pin!(put);
        // The upload must not finish before its last chunk: if it does, the store did not
        // wait for it and the figure would be meaningless.
        if tokio::time::timeout(HEAD_START, &mut put).await.is_ok() {
            return Err(tiersweep::error::StoreError::new(
                tiersweep::error::StoreKind::Lt,
                "upload",
                b.to_string(),
                tiersweep::error::ErrorKind::Permanent,
                "the upload completed without its last chunk",
            ));
        }
        let t = Instant::now();
        let _ = release.send(());
        put.await?;
        after.push(t.elapsed().as_micros() as u64);
        for r in [&a, &b] {
            lt.delete(r).await?;
        }
    }
    whole.sort_unstable();
    after.sort_unstable();
    Ok(UploadSplit {
        bytes: body.len(),
        samples: n,
        whole_p50_us: super::percentile(&whole, 0.5),
        after_last_byte_p50_us: super::percentile(&after, 0.5),
    })
}

/// `body` in two chunks, all but its last [`TAIL`] bytes and those; the last one waits for
/// `held` when given.
fn chunks(body: &Bytes, held: Option<tokio::sync::oneshot::Receiver<()>>) -> ByteStream {
    use futures::StreamExt as _;
    let cut = body.len() - TAIL;
    let (head, tail) = (body.slice(..cut), body.slice(cut..));
    let last = futures::stream::once(async move {
        if let Some(held) = held {
            let _ = held.await;
        }
        Ok(tail)
    });
    Box::pin(futures::stream::iter([Ok(head)]).chain(last))
}
