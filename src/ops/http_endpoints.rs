//! Plain-HTTP answers on the WebSocket port: `GET /health` and `GET /metrics`.

use super::metrics::Metrics;
use crate::protocol::http::response;

/// `/health`: 200 while serving, 503 while draining for shutdown (so load balancers stop
/// sending new clients).
pub fn health(metrics: &Metrics, draining: bool) -> Vec<u8> {
    let (status, state) = if draining {
        (503, "draining")
    } else {
        (200, "ok")
    };
    let body = format!(
        "{{\"status\":\"{state}\",\"shards\":{},\"connections\":{}}}",
        metrics.shards.len(),
        metrics.total_connections()
    );
    response(status, "application/json", body.as_bytes())
}

/// `/metrics`: Prometheus text format.
pub fn metrics(metrics: &Metrics) -> Vec<u8> {
    response(
        200,
        "text/plain; version=0.0.4",
        metrics.render().as_bytes(),
    )
}
