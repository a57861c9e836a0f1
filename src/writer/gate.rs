//! The gate on a large put's upload: the upload starts at once, and its final chunk waits
//! until the change's record has landed and its guard is valid.
//!
//! Why this is safe: what invariant I1 needs is that no blob exists without a row naming
//! it, and a GCS object exists only once its upload is complete — the server has every
//! byte. So the record must be durable before the *last* byte leaves, not before the
//! first. The gate holds one chunk back (never just the end of the stream: with a length
//! known to the server, all bytes sent could be enough to finalize) and releases it only
//! when opened with a valid guard. If the record fails, the guard is already invalid, or
//! the writer stops (crash, cancellation: the opener is dropped), the stream ends with an
//! error instead and the store creates nothing.
//!
//! After the gate opens, every chunk is checked against the guard as before: an upload
//! that outlives its guard stops at its next chunk.

use futures::StreamExt as _;
use tokio::sync::watch;

use super::guard::{GuardState, GuardWatch};
use crate::lt::ByteStream;

#[derive(Clone)]
enum Gate {
    Held,
    Open(GuardWatch),
    Closed(String),
}

/// Opens or closes the gate of one upload; dropping it unopened closes the gate.
pub(crate) struct GateOpener {
    tx: watch::Sender<Gate>,
    timing: std::sync::Arc<Timing>,
}

/// When the body ended and when the gate decided, so the writer can say how long the final
/// chunk waited for the record: zero when the record was wholly hidden behind the upload.
#[derive(Default)]
pub(crate) struct Timing {
    ended: std::sync::OnceLock<tokio::time::Instant>,
    decided: std::sync::OnceLock<tokio::time::Instant>,
}

impl Timing {
    /// How long the final chunk was held; `None` if the body had not ended when the gate
    /// decided (nothing waited) or the gate never decided.
    pub(crate) fn held(&self) -> Option<std::time::Duration> {
        let decided = *self.decided.get()?;
        let ended = *self.ended.get()?;
        Some(decided.saturating_duration_since(ended))
    }
}

impl GateOpener {
    /// The gate's timing, readable after it decided.
    pub(crate) fn timing(&self) -> std::sync::Arc<Timing> {
        self.timing.clone()
    }

    /// Releases the final chunk if the guard is valid now; closes the gate otherwise.
    /// Returns whether it opened.
    pub(crate) fn open(self, watch: GuardWatch) -> bool {
        let _ = self.timing.decided.set(tokio::time::Instant::now());
        match watch.state() {
            GuardState::Valid => {
                self.tx.send_replace(Gate::Open(watch));
                true
            }
            state => {
                self.close(format!("the change's guard was {state:?} at the gate"));
                false
            }
        }
    }

    /// Ends the upload with an error instead of its final chunk.
    pub(crate) fn close(self, why: impl Into<String>) {
        let _ = self.timing.decided.set(tokio::time::Instant::now());
        self.tx.send_replace(Gate::Closed(why.into()));
    }
}

/// `body` with its final chunk held until the returned opener opens the gate.
pub(crate) fn gated(body: ByteStream) -> (ByteStream, GateOpener) {
    let (tx, rx) = watch::channel(Gate::Held);
    let timing = std::sync::Arc::new(Timing::default());
    let state = State {
        body: Some(body),
        held: None,
        rx,
        timing: timing.clone(),
    };
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.next().await {
            Some(Ok(chunk)) => Some((Ok(chunk), Some(state))),
            Some(Err(e)) => Some((Err(e), None)),
            None => None,
        }
    });
    (Box::pin(stream), GateOpener { tx, timing })
}

struct State {
    /// `None` once the body has ended.
    body: Option<ByteStream>,
    /// The last chunk read, not yet handed on: it goes only through an open gate.
    held: Option<bytes::Bytes>,
    rx: watch::Receiver<Gate>,
    timing: std::sync::Arc<Timing>,
}

impl State {
    async fn next(&mut self) -> Option<std::io::Result<bytes::Bytes>> {
        while let Some(body) = self.body.as_mut() {
            match body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    if let Some(previous) = self.held.replace(chunk) {
                        return Some(self.pass(previous));
                    }
                }
                Some(Err(e)) => return Some(Err(e)),
                None => self.body = None,
            }
        }
        // The body has ended: the held chunk is the last one.
        let _ = self.timing.ended.set(tokio::time::Instant::now());
        if crate::mutants::on(crate::mutants::Mutant::UngatedUpload) {
            return self.held.take().map(Ok);
        }
        let decided = self
            .rx
            .wait_for(|gate| !matches!(gate, Gate::Held))
            .await
            .map(|gate| gate.clone());
        match decided {
            Ok(Gate::Open(_)) if crate::mutants::on(crate::mutants::Mutant::StreamEndUngated) => {
                self.held.take().map(Ok)
            }
            Ok(Gate::Open(_)) => self.held.take().map(|last| self.pass(last)),
            Ok(Gate::Closed(why)) => Some(Err(std::io::Error::other(format!(
                "upload stopped before its final chunk: {why}"
            )))),
            Ok(Gate::Held) | Err(_) => Some(Err(std::io::Error::other(
                "upload stopped before its final chunk: the writer stopped before the gate opened",
            ))),
        }
    }

    /// A chunk through the gate as it stands: before it opens, any chunk but the last
    /// passes; once open, only while the guard is valid; once closed, none.
    fn pass(&self, chunk: bytes::Bytes) -> std::io::Result<bytes::Bytes> {
        match &*self.rx.borrow() {
            Gate::Held => Ok(chunk),
            Gate::Open(watch) => match watch.state() {
                GuardState::Valid => Ok(chunk),
                state => Err(std::io::Error::other(format!(
                    "the change's guard lapsed ({state:?}); upload stopped"
                ))),
            },
            Gate::Closed(why) => Err(std::io::Error::other(format!("upload stopped: {why}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn body(chunks: &[&'static str]) -> ByteStream {
        let chunks: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c.as_bytes())))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    async fn next_now(stream: &mut ByteStream) -> Option<Option<std::io::Result<Bytes>>> {
        tokio::time::timeout(std::time::Duration::from_millis(50), stream.next())
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn every_chunk_but_the_last_passes_before_the_gate_decides() {
        let (mut stream, _opener) = gated(body(&["a", "b", "c"]));
        assert_eq!(next_now(&mut stream).await.unwrap().unwrap().unwrap(), "a");
        assert_eq!(next_now(&mut stream).await.unwrap().unwrap().unwrap(), "b");
        assert!(
            next_now(&mut stream).await.is_none(),
            "the last chunk is held"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_or_dropped_gate_ends_the_upload_with_an_error() {
        let (mut stream, opener) = gated(body(&["a", "b"]));
        assert!(next_now(&mut stream).await.unwrap().unwrap().is_ok());
        opener.close("the record failed");
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("the record failed"), "{err}");
        assert!(stream.next().await.is_none());

        let (mut stream, opener) = gated(body(&["only"]));
        drop(opener);
        assert!(
            stream.next().await.unwrap().is_err(),
            "a crash mid-record sends nothing more"
        );
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_says_how_long_the_final_chunk_waited() {
        let (mut stream, opener) = gated(body(&["a", "b"]));
        let timing = opener.timing();
        assert!(next_now(&mut stream).await.unwrap().unwrap().is_ok());
        assert!(
            next_now(&mut stream).await.is_none(),
            "the body ended, its last chunk held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        opener.close("enough");
        let held = timing
            .held()
            .expect("the body ended before the gate decided");
        assert!(held >= std::time::Duration::from_millis(30), "{held:?}");

        let (_stream, opener) = gated(body(&["a", "b"]));
        let timing = opener.timing();
        opener.close("decided before the body ended");
        assert_eq!(timing.held(), None, "nothing waited");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_still_waits_for_the_gate() {
        let (mut stream, opener) = gated(body(&[]));
        assert!(next_now(&mut stream).await.is_none(), "the end is held too");
        drop(opener);
        assert!(stream.next().await.unwrap().is_err());
    }

    use super::super::guard::tests::guard;

    #[tokio::test(start_paused = true)]
    async fn an_open_gate_releases_the_last_chunk_and_then_follows_the_guard() {
        let clock =
            crate::testing::SkewedClock::new(std::sync::Arc::new(crate::clock::TokioClock::new()));
        let g = guard(clock.clone()).await;
        let (mut stream, opener) = gated(body(&["a", "b"]));
        assert!(next_now(&mut stream).await.unwrap().unwrap().is_ok());
        assert!(opener.open(g.watch()));
        assert_eq!(stream.next().await.unwrap().unwrap(), "b");
        assert!(stream.next().await.is_none());

        // Opened, then the guard lapses (a day's suspend): the next chunk stops the upload.
        let (mut stream, opener) = gated(body(&["a", "b", "c"]));
        assert!(opener.open(g.watch()));
        assert!(stream.next().await.unwrap().is_ok());
        clock.jump(std::time::Duration::from_secs(24 * 3600), true);
        assert!(stream.next().await.unwrap().is_err());
        assert!(stream.next().await.is_none());

        // A guard already invalid at the gate closes it.
        let (mut stream, opener) = gated(body(&["a"]));
        assert!(!opener.open(g.watch()), "the guard has lapsed");
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("at the gate"), "{err}");
    }
}
