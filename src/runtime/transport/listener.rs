//! The accept loop of one shard. Every shard binds the same address (glommio sets SO_REUSEPORT),
//! so the kernel spreads new connections over the shards and each shard owns what it accepts.

use futures_lite::FutureExt;
use glommio::net::{TcpListener, TcpStream};

/// Accepts connections until `stop` fires (or its sender is dropped), handing each to `serve`.
pub async fn accept_loop(
    shard_id: usize,
    listener: TcpListener,
    stop: flume::Receiver<()>,
    serve: impl Fn(TcpStream),
) {
    enum Next {
        Conn(glommio::Result<glommio::net::TcpStream, ()>),
        Stop,
    }
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
                // Out of descriptors or similar: log, and keep serving the connections we have.
                tracing::warn!(shard = shard_id, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
            Next::Stop => return,
        }
    }
}
