//! A game studio's own channel, written against shardcast's public API only — this file could
//! live in the studio's crate unchanged.
//!
//! `cargo run --example lobby`, then connect phoenix.js to `ws://127.0.0.1:4010/socket` with
//! params `{player: "ada"}` and join `lobby:1`. Push `ready` from two players: everyone gets
//! `player_ready`, then a countdown (`countdown` pushes every second) and `match_start`.

use serde_json::json;
use shardcast::channel::{
    App, Assigns, Channel, ChannelCtx, ConnectInfo, ConnectRefused, HandleIn, HandleInfo, Payload,
    Router,
};
use shardcast::{Config, Server};
use std::any::Any;
use std::time::Duration;

/// Socket connect hook: a `player` query parameter is required and becomes an assign.
fn connect(info: &ConnectInfo) -> Result<Assigns, ConnectRefused> {
    let player = info
        .param("player")
        .filter(|p| !p.is_empty() && p.len() <= 32);
    let player = player.ok_or_else(|| ConnectRefused {
        reason: "a player name (1-32 bytes) is required".into(),
    })?;
    let mut assigns = Assigns::new();
    assigns.insert("player".into(), json!(player));
    Ok(assigns)
}

/// Per-join state of one player in one lobby.
#[derive(Default)]
struct Lobby {
    ready: bool,
}

/// A countdown step, delivered to `handle_info` by `send_after`.
struct Countdown(u32);

impl Channel for Lobby {
    fn join(&mut self, ctx: &mut ChannelCtx<'_>, _payload: Payload) -> Result<Payload, Payload> {
        let player = ctx.assigns()["player"].clone();
        ctx.broadcast_from(
            "player_joined",
            &Payload::json(&json!({ "player": player })),
        );
        Ok(Payload::json(&json!({ "you": player })))
    }

    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, _payload: Payload) -> HandleIn {
        match event {
            "ready" if !self.ready => {
                self.ready = true;
                let player = ctx.assigns()["player"].clone();
                ctx.broadcast("player_ready", &Payload::json(&json!({ "player": player })));
                ctx.send_after(Duration::from_secs(1), Countdown(3));
                HandleIn::ok(Payload::empty())
            }
            "ready" => HandleIn::error_reason("already ready"),
            _ => HandleIn::error_reason("unknown event"),
        }
    }

    fn handle_info(&mut self, ctx: &mut ChannelCtx<'_>, msg: Box<dyn Any>) -> HandleInfo {
        if let Ok(step) = msg.downcast::<Countdown>() {
            match step.0 {
                0 => ctx.broadcast("match_start", &Payload::empty()),
                n => {
                    let _ = ctx.push("countdown", &Payload::json(&json!({ "seconds": n })));
                    ctx.send_after(Duration::from_secs(1), Countdown(n - 1));
                }
            }
        }
        HandleInfo::Continue
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut config = Config::load(None)?;
    config.listen = "127.0.0.1:4010".parse()?;
    let app = App::new(connect, Router::new().channel("lobby:*", Lobby::default));
    let server = Server::start(config, app)?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    signals.forever().next();
    server.shutdown()?;
    Ok(())
}
