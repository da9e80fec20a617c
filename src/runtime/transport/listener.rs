//! The accept loop of one shard. Every shard binds the same address (glommio sets SO_REUSEPORT),
//! so the kernel spreads new connections over the shards and each shard owns what it accepts.
//!
//! **At the descriptor limit** a listener that cannot accept would leave the newest clients
//! (health checks included) hanging without an answer, and log a warning per attempt. Each shard
//! keeps one descriptor in reserve: when accept fails for want of descriptors, it lets go of the
//! reserve, accepts the waiting connection, answers it `503` and closes it (the newest is shed,
//! established connections keep working), then takes the reserve back. The warning is logged at
//! most once a second, with the count since the last one; `accept_failures` and
//! `connections_shed` count both in the metrics.

use crate::ops::metrics::ShardMetrics;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// What a shed connection reads before the server closes it.
const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 38\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver at its connection limit (retry)";

/// Accepts connections until `stop` fires (or its sender is dropped), handing each to `serve`.
pub async fn accept_loop(
    shard_id: usize,
    listener: TcpListener,
    stop: flume::Receiver<()>,
    metrics: &ShardMetrics,
    serve: impl Fn(TcpStream),
) {
    enum Next {
        Conn(glommio::Result<glommio::net::TcpStream, ()>),
        Stop,
    }
    let mut reserve = open_reserve();
    let mut warnings = WarnPace::default();
    loop {
        let accept = async { Next::Conn(listener.accept().await) };
        let stopped = async {
            let _ = stop.recv_async().await;
            Next::Stop
        };
        match accept.or(stopped).await {
            Next::Conn(Ok(stream)) => {
                serve(stream);
            }
            Next::Conn(Err(e)) => {
                ShardMetrics::inc(&metrics.accept_failures);
                let out_of_descriptors = matches!(
                    &e,
                    glommio::GlommioError::IoError(io)
                        if matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                );
                if let Some(suppressed) = warnings.should_log(Instant::now()) {
                    tracing::warn!(shard = shard_id, error = %e, suppressed, "accept failed");
                }
                if out_of_descriptors && reserve.take().is_some() {
                    // The reserve's descriptor is free now: the waiting connection gets it.
                    if let Ok(Ok(mut waiting)) =
                        glommio::timer::timeout(Duration::from_millis(100), async {
                            Ok(listener.accept().await)
                        })
                        .await
                    {
                        ShardMetrics::inc(&metrics.connections_shed);
                        shed(&mut waiting).await;
                    }
                    reserve = open_reserve();
                } else {
                    // Something else went wrong, or no reserve: do not spin.
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    if reserve.is_none() {
                        reserve = open_reserve();
                    }
                }
            }
            Next::Stop => return,
        }
    }
}

/// Answers a connection the shard has no descriptor for 503 and closes it, within a moment in
/// all (a trickling client must not hold the caller).
pub async fn shed(stream: &mut TcpStream) {
    let _ = glommio::timer::timeout(Duration::from_millis(200), async {
        shed_one(stream).await;
        Ok(())
    })
    .await;
}

/// Answers a shed connection 503 and closes it without losing the answer: closing with the
/// client's request unread would reset the connection (and the client would discard the
/// answer), so its input is read until it closes too (the caller bounds the time).
async fn shed_one(stream: &mut TcpStream) {
    let _ = stream.write_all(SHED_RESPONSE).await;
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    let mut discard = [0u8; 1024];
    while let Ok(n) = stream.read(&mut discard).await {
        if n == 0 {
            break;
        }
    }
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// At most one warning a second; counts what it held back.
#[derive(Default)]
struct WarnPace {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnPace {
    /// `Some(held back since the last warning)` when a warning may be logged now.
    fn should_log(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WarnPace;
    use std::time::{Duration, Instant};

    #[test]
    fn warnings_are_paced_to_one_a_second() {
        let t0 = Instant::now();
        let mut pace = WarnPace::default();
        assert_eq!(pace.should_log(t0), Some(0));
        let logged = (1..=230)
            .filter(|i| pace.should_log(t0 + Duration::from_millis(i * 4)).is_some())
            .count();
        assert_eq!(logged, 0, "230 failures within the second: none logged");
        assert_eq!(pace.should_log(t0 + Duration::from_secs(1)), Some(230));
    }
}
