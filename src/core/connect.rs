//! The socket `connect` hook and the application a server runs.

use super::ctx::SharedAssigns;
use super::{echo, Router};
use std::net::SocketAddr;
use std::sync::Arc;

/// What the connect hook sees.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    /// Query parameters of the upgrade request, decoded, in order (`vsn` included).
    pub params: Vec<(String, String)>,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the upgrade arrived (token expiry is checked against it).
    pub now: super::Now,
}

impl ConnectInfo {
    /// The first query parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A refused connection: answered with HTTP 403 and this reason, before any WebSocket exists.
#[derive(Debug, Clone, thiserror::Error)]
#[error("connection refused: {reason}")]
pub struct ConnectRefused {
    /// Shown to the client in the 403 body.
    pub reason: String,
}

/// The socket `connect` hook: decides who a socket is. Its [`SocketHandler::Assigns`] (a type the
/// studio defines) is what every channel of the socket reads with
/// [`ChannelCtx::assigns`](super::ChannelCtx::assigns).
pub trait SocketHandler: Send + Sync + 'static {
    /// The socket's assigns.
    type Assigns: Send + Sync + 'static;
    /// Accepts (with assigns) or refuses a socket.
    fn connect(&self, info: &ConnectInfo) -> Result<Self::Assigns, ConnectRefused>;
}

impl<F, A> SocketHandler for F
where
    F: Fn(&ConnectInfo) -> Result<A, ConnectRefused> + Send + Sync + 'static,
    A: Send + Sync + 'static,
{
    type Assigns = A;
    fn connect(&self, info: &ConnectInfo) -> Result<A, ConnectRefused> {
        self(info)
    }
}

/// Accepts every socket, with `()` as assigns.
pub struct AllowAll;

impl SocketHandler for AllowAll {
    type Assigns = ();
    fn connect(&self, _info: &ConnectInfo) -> Result<(), ConnectRefused> {
        Ok(())
    }
}

/// A [`SocketHandler`] with its assigns type erased, as the runtime keeps it.
pub(crate) trait AnySocketHandler: Send + Sync {
    fn connect(&self, info: &ConnectInfo) -> Result<SharedAssigns, ConnectRefused>;
}

impl<H: SocketHandler> AnySocketHandler for H {
    fn connect(&self, info: &ConnectInfo) -> Result<SharedAssigns, ConnectRefused> {
        SocketHandler::connect(self, info).map(|a| Arc::new(a) as SharedAssigns)
    }
}

/// Everything application-specific the server runs: the connect hook and the channel routes.
#[derive(Clone)]
pub struct App {
    socket: Arc<dyn AnySocketHandler>,
    /// The channel routes.
    pub router: Arc<Router>,
}

impl App {
    /// An app of a connect hook and routes.
    pub fn new(socket: impl SocketHandler, router: Router) -> App {
        App {
            socket: Arc::new(socket),
            router: Arc::new(router),
        }
    }

    /// Runs the connect hook.
    pub fn connect(&self, info: &ConnectInfo) -> Result<SharedAssigns, ConnectRefused> {
        self.socket.connect(info)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("router", &self.router).finish()
    }
}

impl Default for App {
    /// The built-in channels (`echo:*`), open to every socket.
    fn default() -> Self {
        App::new(
            AllowAll,
            Router::new().channel("echo:*", echo::EchoChannel::default),
        )
    }
}
