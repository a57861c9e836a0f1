//! How the simulation's writers write — byte puts and deletes, client-paced streamed puts,
//! deferred puts whose clients finish in time, late, abort or go away — and its readers
//! read.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;

use super::plan::{Finish, Value};
use tiersweep::model::{ObjectMeta, ObjectPath};
use tiersweep::protocol::ProtocolConfig;
use tiersweep::writer::{ReadOutcome, StreamOutcome, TieredStorage, WriteError};

/// Reads `path` whole, or as a stream to its end (a stream cut short by an overwrite
/// counts as no answer); `None` when the read failed.
pub(super) async fn read(
    reader: &TieredStorage,
    path: &ObjectPath,
    streamed: bool,
) -> Option<ReadOutcome> {
    if !streamed {
        return reader.get(path).await.ok();
    }
    match reader.get_stream(path).await.ok()? {
        StreamOutcome::Found(mut stream, meta) => {
            let mut bytes = bytes::BytesMut::new();
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk.ok()?);
            }
            Some(ReadOutcome::Found(tiersweep::writer::Object {
                bytes: bytes.freeze(),
                meta,
            }))
        }
        StreamOutcome::NotFound => Some(ReadOutcome::NotFound),
        StreamOutcome::Dangling(rev) => Some(ReadOutcome::Dangling(rev)),
    }
}

/// Writes `bytes` (or deletes, for `None`) to `path` the way `value` says.
pub(super) async fn perform(
    writer: &TieredStorage,
    path: &ObjectPath,
    value: Value,
    bytes: Option<Bytes>,
) -> Result<(), WriteError> {
    let Some(bytes) = bytes else {
        return writer.delete(path).await;
    };
    match value {
        Value::Absent | Value::Small | Value::Large => writer.put(path, bytes).await,
        Value::Streamed { pace, end, fails } => {
            writer
                .put_stream(path, paced(bytes, pace, end, fails))
                .await
        }
        Value::Deferred { within, finish } => {
            let put = writer
                .begin_deferred_put(path, ObjectMeta::default(), within)
                .await?;
            match finish {
                Finish::Never => Ok(()),
                Finish::Abort { after } => {
                    tokio::time::sleep(after).await;
                    writer.abort_deferred_put(put).await
                }
                Finish::Stream { after, end } => {
                    tokio::time::sleep(after).await;
                    writer
                        .finish_deferred_put(put, paced(bytes, Duration::ZERO, end, false))
                        .await
                }
            }
        }
    }
}

/// Whether the object may take the write's value: a failing stream, or a deferred put
/// aborted or never finished, must leave it as it was.
pub(super) fn may_land(value: Value) -> bool {
    !matches!(
        value,
        Value::Streamed { fails: true, .. }
            | Value::Deferred {
                finish: Finish::Never | Finish::Abort { .. },
                ..
            }
    )
}

/// Whether a write that meets no fault must succeed: a deferred put whose stream ends
/// with room to spare before its deadline less the safety margin (another margin for the
/// commit's calls), and every other kind but a failing stream.
pub(super) fn in_time(value: Value, protocol: ProtocolConfig) -> bool {
    match value {
        Value::Streamed { fails, .. } => !fails,
        Value::Deferred {
            within,
            finish: Finish::Stream { after, end },
        } => after + end + protocol.safety_margin * 2 < within,
        Value::Deferred { .. } => false,
        Value::Absent | Value::Small | Value::Large => true,
    }
}

/// `bytes` as a client sends them: three chunks `pace` apart, then the end of the stream
/// `end` after the last one (what completes the upload); with `fails`, an error after the
/// first chunk.
fn paced(
    bytes: Bytes,
    pace: Duration,
    end: Duration,
    fails: bool,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let third = bytes.len().div_ceil(3);
    let mut chunks: Vec<std::io::Result<Bytes>> = (0..bytes.len())
        .step_by(third)
        .map(|at| Ok(bytes.slice(at..(at + third).min(bytes.len()))))
        .collect();
    if fails {
        chunks.truncate(1);
        chunks.push(Err(std::io::Error::other("the client went away")));
    }
    let parts =
        futures::stream::iter(chunks.into_iter().enumerate()).then(move |(i, chunk)| async move {
            if i > 0 {
                tokio::time::sleep(pace).await;
            }
            chunk
        });
    let ending = futures::stream::once(async move {
        tokio::time::sleep(end).await;
        None
    })
    .filter_map(|never: Option<std::io::Result<Bytes>>| async move { never });
    parts.chain(ending)
}
