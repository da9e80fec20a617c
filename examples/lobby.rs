//! A game studio's own channel, written against shardcast's public API only — this file could
//! live in the studio's crate unchanged.
//!
//! `cargo run --example lobby`, then connect phoenix.js to `ws://127.0.0.1:4010/socket` with
//! params `{player: "ada"}` and join `lobby:1`. Push `ready` from two players: everyone gets
//! `player_ready`, then a countdown (`countdown` pushes every second) and `match_start`.
//! `cargo test --example lobby` runs its unit tests, on a virtual clock, with no socket.

use serde_json::json;
use shardcast::core::{
    App, Channel, ChannelCtx, ConnectInfo, ConnectRefused, HandleIn, HandleInfo, Payload, Router,
};
use shardcast::{Config, Server};
use std::time::Duration;

/// The socket's assigns: who is playing.
#[derive(Debug, Clone)]
struct Player {
    name: String,
}

/// Socket connect hook: a `player` query parameter (1-32 bytes) is required.
fn connect(info: &ConnectInfo) -> Result<Player, ConnectRefused> {
    let name = info
        .param("player")
        .filter(|p| !p.is_empty() && p.len() <= 32)
        .ok_or_else(|| ConnectRefused {
            reason: "a player name (1-32 bytes) is required".into(),
        })?;
    Ok(Player { name: name.into() })
}

/// Per-join state of one player in one lobby.
#[derive(Default)]
struct Lobby {
    ready: bool,
}

/// What the lobby's `handle_info` receives: its own countdown steps.
enum LobbyInfo {
    Countdown(u32),
}

type Ctx<'a> = ChannelCtx<'a, LobbyInfo>;

/// The player of this socket (every socket has one: the connect hook requires it).
fn player(ctx: &Ctx<'_>) -> Result<Player, Payload> {
    ctx.assigns::<Player>()
        .cloned()
        .ok_or_else(|| Payload::json(&json!({ "reason": "no player" })))
}

impl Channel for Lobby {
    type Info = LobbyInfo;

    fn join(&mut self, ctx: &mut Ctx<'_>, _payload: Payload) -> Result<Payload, Payload> {
        let player = player(ctx)?;
        ctx.broadcast_from(
            "player_joined",
            &Payload::json(&json!({ "player": player.name })),
        );
        Ok(Payload::json(&json!({ "you": player.name })))
    }

    fn handle_in(&mut self, ctx: &mut Ctx<'_>, event: &str, _payload: Payload) -> HandleIn {
        match event {
            "ready" if !self.ready => {
                let player = match player(ctx) {
                    Ok(p) => p,
                    Err(e) => return HandleIn::error(e),
                };
                self.ready = true;
                ctx.broadcast(
                    "player_ready",
                    &Payload::json(&json!({ "player": player.name })),
                );
                ctx.send_after(Duration::from_secs(1), LobbyInfo::Countdown(3));
                HandleIn::ok(Payload::empty())
            }
            "ready" => HandleIn::error_reason("already ready"),
            _ => HandleIn::error_reason("unknown event"),
        }
    }

    fn handle_info(&mut self, ctx: &mut Ctx<'_>, msg: LobbyInfo) -> HandleInfo {
        let LobbyInfo::Countdown(n) = msg;
        if n == 0 {
            ctx.broadcast("match_start", &Payload::empty());
            return HandleInfo::Continue;
        }
        ctx.send_after(Duration::from_secs(1), LobbyInfo::Countdown(n - 1));
        match ctx.push("countdown", &Payload::json(&json!({ "seconds": n }))) {
            Ok(()) => HandleInfo::Continue,
            Err(e) => {
                // A JSON push always encodes; should it not, this join cannot go on.
                eprintln!("countdown push failed: {e}");
                HandleInfo::Stop
            }
        }
    }
}

fn app() -> App {
    App::new(connect, Router::new().channel("lobby:*", Lobby::default))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut config = Config::load(None)?;
    config.listen = "127.0.0.1:4010".parse()?;
    let server = Server::start(config, app())?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    signals.forever().next();
    server.shutdown()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::app;
    use serde_json::json;
    use shardcast::testing::TestServer;
    use std::time::Duration;

    #[test]
    fn a_player_name_is_required() {
        let mut server = TestServer::new(app());
        let refused = server.connect(&[]).unwrap_err();
        assert!(refused.reason.contains("player name"));
        assert!(server.connect(&[("player", "ada")]).is_ok());
    }

    #[test]
    fn ready_counts_down_on_virtual_time_then_starts_the_match() {
        let mut server = TestServer::new(app());
        let ada = server.connect(&[("player", "ada")]).unwrap();
        let bo = server.connect(&[("player", "bo")]).unwrap();
        let reply = server.join(ada, "lobby:1", json!({}));
        assert_eq!(reply.response(), json!({"you": "ada"}));
        server.join(bo, "lobby:1", json!({}));
        assert_eq!(
            server.received_events(ada, "player_joined")[0].json_payload(),
            Some(json!({"player": "bo"}))
        );

        assert_eq!(
            server.push(bo, "lobby:1", "ready", json!({})).status(),
            Some("ok")
        );
        assert_eq!(
            server.push(bo, "lobby:1", "ready", json!({})).status(),
            Some("error")
        );
        assert_eq!(server.received_events(ada, "player_ready").len(), 1);

        // Nothing happens until a second has passed, then one step per second.
        server.advance(Duration::from_millis(999));
        assert!(server.received_events(bo, "countdown").is_empty());
        server.advance(Duration::from_millis(1));
        let steps = |s: &TestServer| -> Vec<serde_json::Value> {
            s.received_events(bo, "countdown")
                .iter()
                .filter_map(|f| f.json_payload())
                .collect()
        };
        assert_eq!(steps(&server), vec![json!({"seconds": 3})]);
        server.advance(Duration::from_secs(2));
        assert_eq!(steps(&server).len(), 3);
        assert!(server.received_events(ada, "match_start").is_empty());
        server.advance(Duration::from_secs(1));
        assert_eq!(server.received_events(ada, "match_start").len(), 1);
        assert_eq!(server.pending_timers(), 0);
    }
}
