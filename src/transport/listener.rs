//! The accept loop of one shard. Every shard binds the same address (glommio sets SO_REUSEPORT),
//! so the kernel spreads new connections over the shards and each shard owns what it accepts.

use super::connection;
use crate::shard::context::Shard;
use futures_lite::FutureExt;
use glommio::net::TcpListener;
use std::rc::Rc;

/// Accepts connections until `stop` fires (or its sender is dropped).
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, stop: flume::Receiver<()>) {
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
                glommio::spawn_local(connection::serve(shard.clone(), stream)).detach();
            }
            Next::Conn(Err(e)) => {
                // Out of descriptors or similar: log, and keep serving the connections we have.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
            Next::Stop => return,
        }
    }
}
