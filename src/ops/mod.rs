//! Operating the server: configuration, metrics, and the plain-HTTP endpoints.

pub mod config;
pub mod http_endpoints;
pub mod metrics;
