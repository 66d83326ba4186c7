//! Stall detection: a request fails when it makes no progress for a while, however long it takes in all.
//!
//! A registry frozen mid-answer (SIGSTOP, a dead proxy) or trickling a byte a second must not hold a build
//! for minutes, while a big layer on a slow link may take as long as it needs (issue #19). So there is no
//! total timeout; instead each request attempt has a [`Progress`]: the bytes moved either way (request
//! body sent, response body received) are counted, and every [`PROGRESS_UNIT`] bytes is progress. An
//! attempt with no progress for the stall timeout fails with [`Error::Stalled`](crate::Error::Stalled).
//!
//! Request bodies are created inside [`Client::send`](crate::Client)'s `build` closure, which runs within
//! [`scope`]: the body constructors here ([`counted_stream`], [`counted_bytes`]) pick up the attempt's
//! `Progress` from that scope, so no signature has to carry it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// The default stall timeout: no progress for this long fails the attempt.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes that count as one step of progress: a peer trickling less than this per stall timeout (about
/// 34 bytes/s at the default) is stalled.
pub(crate) const PROGRESS_UNIT: u64 = 1024;

/// Piece size of an in-memory request body sent through [`counted_bytes`].
const PIECE: usize = 64 << 10;

/// The stall timeout when none is given: `$RBUILD_REGISTRY_STALL_TIMEOUT` (seconds), else
/// [`DEFAULT_STALL_TIMEOUT`].
pub fn default_stall_timeout() -> Duration {
    std::env::var("RBUILD_REGISTRY_STALL_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_STALL_TIMEOUT, Duration::from_secs_f64)
}

/// The progress of one request attempt.
#[derive(Debug)]
pub(crate) struct Progress {
    start: Instant,
    stall: Duration,
    /// Milliseconds after `start` of the last progress.
    last_ms: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    pub(crate) fn new(stall: Duration) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            stall,
            last_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts `n` bytes moved; each [`PROGRESS_UNIT`] completed is progress.
    pub(crate) fn add(&self, n: u64) {
        let before = self.bytes.fetch_add(n, Ordering::Relaxed);
        if (before + n) / PROGRESS_UNIT > before / PROGRESS_UNIT {
            self.touch();
        }
    }

    /// Marks progress that is not the peer's doing (a request body waiting on a local writer).
    pub(crate) fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Runs `fut` to completion, or fails once no progress was made for the stall timeout.
    pub(crate) async fn watch<T>(&self, fut: impl Future<Output = T>) -> Result<T, Stalled> {
        let mut fut = std::pin::pin!(fut);
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.start + last + self.stall;
            tokio::select! {
                out = &mut fut => return Ok(out),
                () = tokio::time::sleep_until(deadline.into()) => {
                    if self.last_ms.load(Ordering::Relaxed) == u64::try_from(last.as_millis()).unwrap_or(u64::MAX) {
                        return Err(Stalled);
                    }
                }
            }
        }
    }
}

/// No progress for the stall timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stalled;

tokio::task_local! {
    static CURRENT: Arc<Progress>;
}

/// Runs `f` (a request builder) with `progress` as the one body constructors count into.
pub(crate) fn scope<T>(progress: &Arc<Progress>, f: impl FnOnce() -> T) -> T {
    CURRENT.sync_scope(progress.clone(), f)
}

/// The progress of the attempt whose request is being built, if any (see [`scope`]).
pub(crate) fn current() -> Option<Arc<Progress>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// A request body from `stream` whose bytes count as progress of the current attempt (see [`scope`]).
pub(crate) fn counted_stream<S, E>(stream: S) -> reqwest::Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let progress = current();
    reqwest::Body::wrap_stream(stream.map(move |item| {
        if let (Ok(b), Some(p)) = (&item, &progress) {
            p.add(b.len() as u64);
        }
        item
    }))
}

/// A request body of `bytes`, sent in pieces so that a slow upload shows progress (see [`scope`]).
pub(crate) fn counted_bytes(bytes: Bytes) -> reqwest::Body {
    if bytes.len() <= PIECE {
        if let Some(p) = current() {
            // Small enough to be in the socket buffer at once: sending it is not waiting on the peer.
            p.add(bytes.len() as u64);
        }
        return reqwest::Body::from(bytes);
    }
    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..bytes.len())
        .step_by(PIECE)
        .map(|at| Ok(bytes.slice(at..(at + PIECE).min(bytes.len()))))
        .collect();
    counted_stream(futures_util::stream::iter(pieces))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silence_stalls_and_progress_keeps_going() {
        let stall = Duration::from_millis(300);
        let p = Progress::new(stall);
        assert_eq!(p.watch(std::future::pending::<()>()).await, Err(Stalled));

        // 1 KiB every 100 ms for 800 ms: never 300 ms without progress.
        let p = Progress::new(stall);
        let feeder = async {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                p.add(PROGRESS_UNIT);
            }
            "done"
        };
        assert_eq!(p.watch(feeder).await, Ok("done"));

        // A trickle (a byte every 10 ms) moves bytes but makes no progress.
        let p = Progress::new(stall);
        let trickle = async {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                p.add(1);
            }
        };
        assert_eq!(p.watch(trickle).await, Err(Stalled));
        assert!(p.bytes.load(Ordering::Relaxed) > 5);
    }
}
