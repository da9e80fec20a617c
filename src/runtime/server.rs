//! Starting and stopping the shards.

use super::config::ServerConfig;
use super::shard::Shard;
use super::transport::listener::accept_loop;
use super::transport::ring::SocketRing;
use super::{connection, inbox, memory, mesh};
use crate::core::App;
use crate::ops::metrics::Metrics;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Why the server failed to start or to stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A shard could not bind its listening socket.
    #[error("shard {shard} cannot listen on {addr}: {reason}")]
    Bind {
        /// The shard that failed.
        shard: usize,
        /// The configured listen address.
        addr: SocketAddr,
        /// The bind error.
        reason: String,
    },
    /// The executor (thread) of `shard` could not be spawned, or exited during start.
    #[error("shard {shard} executor failed to start: {reason}")]
    Executor {
        /// The shard that failed.
        shard: usize,
        /// The spawn error, or what went wrong.
        reason: String,
    },
    /// The shard's thread panicked (seen when joined at shutdown).
    #[error("shard {0} panicked")]
    ShardPanicked(usize),
}

/// A running server: its shards run on their own threads until [`ServerHandle::shutdown`].
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Vec<flume::Sender<()>>,
    shards: Vec<ExecutorJoinHandle<()>>,
    metrics: Arc<Metrics>,
}

/// Entry point: [`Server::start`].
pub struct Server;

impl Server {
    /// Starts `config.shard_count()` shards serving `app`; returns once every shard listens.
    pub fn start(config: impl Into<ServerConfig>, app: App) -> Result<ServerHandle, ServerError> {
        let config = Arc::new(config.into());
        let count = config.shard_count();
        let metrics = Arc::new(Metrics::new(count));
        let (senders, inboxes) = mesh::build(count, config.mesh.queue_capacity);
        let cpus = allowed_cpus();
        let (ready_tx, ready_rx) = flume::unbounded::<Result<(), ServerError>>();
        let mut stop = Vec::with_capacity(count);
        let mut shards = Vec::with_capacity(count);

        for (id, mesh_inbox) in inboxes.into_iter().enumerate() {
            let (stop_tx, stop_rx) = flume::bounded::<()>(1);
            stop.push(stop_tx);
            let placement = match (&cpus, config.pin_shards) {
                (Some(cpus), true) if !cpus.is_empty() => Placement::Fixed(cpus[id % cpus.len()]),
                _ => Placement::Unbound,
            };
            let (config, app, senders, metrics, ready) = (
                config.clone(),
                app.clone(),
                senders.clone(),
                metrics.clone(),
                ready_tx.clone(),
            );
            let spawned = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{id}"))
                .io_memory(config.io_memory)
                .spawn(move || async move {
                    let addr = config.listen;
                    let listener = match glommio::net::TcpListener::bind(addr) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready.send(Err(ServerError::Bind {
                                shard: id,
                                addr,
                                reason: e.to_string(),
                            }));
                            return;
                        }
                    };
                    let drain_timeout = Duration::from_millis(config.shutdown_timeout_ms);
                    let ws = &config.websocket;
                    // Deadlines are checked by the ring's sweeper: often enough for the
                    // shortest of them to be kept within a quarter of itself.
                    let shortest = [
                        ws.write_timeout(),
                        ws.idle_timeout(),
                        ws.handshake_timeout(),
                        ws.close_timeout(),
                        ws.park_after(),
                    ]
                    .into_iter()
                    .min()
                    .unwrap_or_default();
                    let tick =
                        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    let ring = match SocketRing::new(metrics.clone(), id, ws.write_timeout(), tick)
                    {
                        Ok(ring) => Rc::new(ring),
                        Err(e) => {
                            let _ = ready.send(Err(ServerError::Executor {
                                shard: id,
                                reason: format!("cannot set up the socket ring (io_uring): {e}"),
                            }));
                            return;
                        }
                    };
                    glommio::spawn_local(ring.clone().run_flusher()).detach();
                    glommio::spawn_local(ring.clone().run_completions()).detach();
                    glommio::spawn_local(ring.clone().run_sweeper()).detach();
                    let shard = Rc::new(Shard::new(id, config, app, senders, metrics, ring));
                    glommio::spawn_local(inbox::run_owner_inbox(shard.clone(), mesh_inbox.owner))
                        .detach();
                    glommio::spawn_local(inbox::run_delivery_inbox(
                        shard.clone(),
                        mesh_inbox.delivery,
                    ))
                    .detach();
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    glommio::spawn_local(connection::run_resumer(shard.clone())).detach();
                    glommio::spawn_local(memory::run_releaser()).detach();
                    let serving = shard.clone();
                    accept_loop(id, listener, stop_rx, shard.metrics(), move |stream| {
                        glommio::spawn_local(connection::serve(serving.clone(), stream)).detach();
                    })
                    .await;
                    tracing::debug!(
                        shard = id,
                        connections = shard.connection_count(),
                        "draining"
                    );
                    shard.start_drain();
                    let drained = shard.drained();
                    let deadline = glommio::timer::sleep(drain_timeout);
                    futures_lite::future::or(drained, deadline).await;
                });
            match spawned {
                Ok(handle) => shards.push(handle),
                Err(e) => {
                    let err = ServerError::Executor {
                        shard: id,
                        reason: e.to_string(),
                    };
                    stop_all(stop, shards);
                    return Err(err);
                }
            }
        }
        drop(ready_tx);
        for _ in 0..count {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    stop_all(stop, shards);
                    return Err(e);
                }
                Err(_) => {
                    stop_all(stop, shards);
                    return Err(ServerError::Executor {
                        shard: 0,
                        reason: "a shard exited during start".into(),
                    });
                }
            }
        }
        tracing::info!(addr = %config.listen, shards = count, "listening");
        Ok(ServerHandle {
            addr: config.listen,
            stop,
            shards,
            metrics,
        })
    }
}

fn stop_all(stop: Vec<flume::Sender<()>>, shards: Vec<ExecutorJoinHandle<()>>) {
    drop(stop);
    for s in shards {
        let _ = s.join();
    }
}

impl ServerHandle {
    /// The address the shards listen on, as configured (`listen`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every shard's counters, as `/metrics` renders them.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Graceful drain: stop accepting, close every connection with 1001 (letting queued frames
    /// go out), wait up to `shutdown_timeout_ms`, then stop the shards.
    pub fn shutdown(self) -> Result<(), ServerError> {
        for s in &self.stop {
            let _ = s.try_send(());
        }
        let mut result = Ok(());
        for (id, s) in self.shards.into_iter().enumerate() {
            if s.join().is_err() {
                result = Err(ServerError::ShardPanicked(id));
            }
        }
        result
    }
}

/// CPUs this process may run on (respecting `taskset`), from `/proc/self/status`.
fn allowed_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(line.trim())
}

/// Parses a CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                cpus.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse::<usize>().ok()?)
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists() {
        assert_eq!(super::parse_cpu_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(super::parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(super::parse_cpu_list("x"), None);
    }
}
