//! Operating the server: metrics, and the plain-HTTP endpoints (the configuration file is
//! [`crate::config`]).

pub mod checks;
pub mod http_endpoints;
pub mod metrics;
