//! A TCP proxy of our own between a worker and an emulator, that misbehaves on command:
//! added latency, every connection reset, a stall (bytes held, connections kept), or an
//! outage (connections refused). The chaos test and the killed-cleaner test put one in
//! front of each emulator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
struct State {
    latency_ms: AtomicU64,
    stalled: AtomicBool,
    down: AtomicBool,
    /// Bumped to reset every open connection.
    generation: AtomicU64,
    connections: AtomicU64,
}

/// The proxy; it stops when dropped.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if state.down.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        continue;
                    };
                    state.connections.fetch_add(1, Ordering::SeqCst);
                    let generation = state.generation.load(Ordering::SeqCst);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(pump(ri, wo, state.clone(), generation));
                    tokio::spawn(pump(ro, wi, state.clone(), generation));
                }
            }
        });
        Ok(Self { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Holds every chunk this long before forwarding it.
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.state.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Holds every byte in flight while `true`, keeping the connections open: a peer that
    /// stopped answering mid-call.
    pub fn set_stalled(&self, stalled: bool) {
        self.state.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Closes every open connection (each side sees a reset or an early EOF).
    pub fn reset_all(&self) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// While down, open connections are closed and new ones refused at once.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
        if down {
            self.reset_all();
        }
    }

    /// Back to a plain forwarder.
    pub fn heal(&self) {
        self.set_down(false);
        self.set_stalled(false);
        self.set_latency(Duration::ZERO);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_all();
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    state: Arc<State>,
    generation: u64,
) {
    let alive = |state: &State| state.generation.load(Ordering::SeqCst) == generation;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_millis(200), from.read(&mut buf)).await;
        if !alive(&state) {
            return;
        }
        let n = match read {
            Err(_) => continue, // nothing to read yet: look at the generation again
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        while state.stalled.load(Ordering::SeqCst) && alive(&state) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let latency = state.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if !alive(&state) || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
