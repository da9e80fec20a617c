//! The built-in `echo:*` channel, which tests and benchmarks rely on: join always succeeds;
//! `echo` replies ok with the pushed payload; `broadcast` sends the payload to every subscriber
//! of the topic (sender included) as event `broadcast`, then replies ok. JSON and binary alike.

use super::{Channel, ChannelCtx, HandleIn, Payload};

/// The `echo:*` channel.
#[derive(Debug, Default)]
pub struct EchoChannel;

impl Channel for EchoChannel {
    type Info = ();

    fn join(&mut self, _ctx: &mut ChannelCtx<'_>, _payload: Payload) -> Result<Payload, Payload> {
        Ok(Payload::empty())
    }

    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, payload: Payload) -> HandleIn {
        match event {
            "echo" => HandleIn::ok(payload),
            "broadcast" => {
                ctx.broadcast("broadcast", &payload);
                HandleIn::ok(Payload::empty())
            }
            _ => HandleIn::error_reason("unknown event"),
        }
    }
}
