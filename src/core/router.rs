//! Topic patterns mapped to channels.

use super::{AnyChannel, Channel};
use std::fmt;

type Factory = Box<dyn Fn() -> Box<dyn AnyChannel> + Send + Sync>;

enum Pattern {
    /// `room:*`: any topic starting with `room:`.
    Prefix(String),
    Exact(String),
}

impl Pattern {
    fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::Prefix(p) => topic.starts_with(p.as_str()),
            Pattern::Exact(e) => topic == e,
        }
    }
}

/// Maps topic patterns to channel implementations; the first matching route wins.
#[derive(Default)]
pub struct Router {
    routes: Vec<(Pattern, Factory)>,
}

impl Router {
    /// No routes.
    pub fn new() -> Router {
        Router::default()
    }

    /// Routes `pattern` (`prefix:*` or an exact topic) to channels made by `make`.
    pub fn channel<C, F>(mut self, pattern: &str, make: F) -> Router
    where
        C: Channel,
        F: Fn() -> C + Send + Sync + 'static,
    {
        let pattern = match pattern.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.to_owned()),
            None => Pattern::Exact(pattern.to_owned()),
        };
        self.routes
            .push((pattern, Box::new(move || Box::new(make()))));
        self
    }

    /// A new channel for `topic`, or `None` when no route matches.
    pub(crate) fn route(&self, topic: &str) -> Option<Box<dyn AnyChannel>> {
        self.routes
            .iter()
            .find(|(p, _)| p.matches(topic))
            .map(|(_, make)| make())
    }

    /// Whether some route matches `topic`.
    pub fn has_route(&self, topic: &str) -> bool {
        self.routes.iter().any(|(p, _)| p.matches(topic))
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pats: Vec<String> = self
            .routes
            .iter()
            .map(|(p, _)| match p {
                Pattern::Prefix(s) => format!("{s}*"),
                Pattern::Exact(s) => s.clone(),
            })
            .collect();
        f.debug_struct("Router").field("routes", &pats).finish()
    }
}
