//! Topics whose subscribers sit on several shards: every broadcast reaches every subscriber
//! exactly once, in each publisher's order.

mod common;
use common::*;
use serde_json::Value;
use shardcast::core::App;
use std::collections::HashMap;

fn per_shard_connections(server: &TestServer) -> Vec<u64> {
    let text = http_get(server.addr, "/metrics").1;
    text.lines()
        .filter(|l| l.starts_with("shardcast_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn broadcast_crosses_shards_exactly_once_in_publisher_order() {
    let server = TestServer::start(App::default(), |c| c.shards = 3);
    let url = server.url("/socket/websocket?vsn=2.0.0");
    let mut clients = Vec::new();
    // The kernel spreads connections over the shards by hash; keep connecting (bounded) until
    // every shard holds some.
    while clients.len() < 12 || per_shard_connections(&server).contains(&0) {
        assert!(
            clients.len() < 120,
            "connections never reached every shard: {:?}",
            per_shard_connections(&server)
        );
        let mut ws = connect(&url);
        join(&mut ws, "1", "echo:cross");
        clients.push(ws);
    }
    const PER_PUBLISHER: usize = 5;
    for (i, ws) in clients.iter_mut().enumerate() {
        for seq in 0..PER_PUBLISHER {
            send_text(
                ws,
                &format!(
                    r#"["1","{i}-{seq}","echo:cross","broadcast",{{"from":{i},"seq":{seq}}}]"#
                ),
            );
        }
    }
    let n = clients.len();
    for (me, ws) in clients.iter_mut().enumerate() {
        let mut next_seq: HashMap<u64, u64> = HashMap::new();
        let mut broadcasts = 0;
        let mut replies = 0;
        while broadcasts < n * PER_PUBLISHER || replies < PER_PUBLISHER {
            let msg: Value = recv_json(ws);
            match msg[3].as_str().unwrap() {
                "broadcast" => {
                    let (from, seq) = (
                        msg[4]["from"].as_u64().unwrap(),
                        msg[4]["seq"].as_u64().unwrap(),
                    );
                    let want = next_seq.entry(from).or_insert(0);
                    assert_eq!(
                        seq, *want,
                        "client {me}: publisher {from} out of order or duplicated"
                    );
                    *want += 1;
                    broadcasts += 1;
                }
                "phx_reply" => replies += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(next_seq.len(), n, "client {me} missed a publisher");
        assert!(next_seq.values().all(|&s| s == PER_PUBLISHER as u64));
        // Nothing extra is pending: the next frame is the heartbeat reply.
        send_text(ws, r#"[null,"hb","phoenix","heartbeat",{}]"#);
        assert_eq!(recv_json(ws)[1], "hb");
    }
    assert!(
        server.metric("mesh_messages_in") > 0,
        "no message crossed shards"
    );
}

mod owner_tasks {
    use super::*;
    use serde_json::json;
    use shardcast::core::{Channel, ChannelCtx, HandleIn, HandleInfo, Payload, Router};

    /// Owner-side state: joins counted per topic, in one place whatever shard the joiner is on.
    #[derive(Default)]
    struct JoinCounts(HashMap<String, u64>);

    struct Numbered(u64);

    #[derive(Default)]
    struct Counter;

    impl Channel for Counter {
        type Info = Numbered;

        fn join(
            &mut self,
            ctx: &mut ChannelCtx<'_, Numbered>,
            _p: Payload,
        ) -> Result<Payload, Payload> {
            let me = ctx.address();
            ctx.run_on_owner(move |owner| {
                let counts = owner.state::<JoinCounts>();
                let n = {
                    let mut counts = counts.borrow_mut();
                    let n = counts.0.entry(owner.topic().to_string()).or_default();
                    *n += 1;
                    *n
                };
                owner.send(&me, Numbered(n));
                owner.broadcast("joined", &Payload::json(&json!({ "n": n })));
            });
            Ok(Payload::empty())
        }

        fn handle_in(
            &mut self,
            _ctx: &mut ChannelCtx<'_, Numbered>,
            _e: &str,
            _p: Payload,
        ) -> HandleIn {
            HandleIn::NoReply
        }

        fn handle_info(&mut self, ctx: &mut ChannelCtx<'_, Numbered>, msg: Numbered) -> HandleInfo {
            {
                let Numbered(n) = msg;
                ctx.push("your_number", &Payload::json(&json!({ "n": n })))
                    .unwrap();
            }
            HandleInfo::Continue
        }
    }

    #[test]
    fn owner_tasks_serialize_per_topic_state_across_shards() {
        let app = App::new(
            shardcast::core::AllowAll,
            Router::new().channel("count:*", Counter::default),
        );
        let server = TestServer::start(app, |c| c.shards = 3);
        let url = server.url("/socket/websocket?vsn=2.0.0");
        let mut clients = Vec::new();
        while clients.len() < 9 || per_shard_connections(&server).contains(&0) {
            assert!(clients.len() < 120, "connections never reached every shard");
            clients.push(connect(&url));
        }
        let n = clients.len() as u64;
        let mut numbers = Vec::new();
        for ws in clients.iter_mut() {
            join(ws, "1", "count:room");
            // The owner answers this client, wherever it is.
            loop {
                let m = recv_json(ws);
                if m[3] == "your_number" {
                    numbers.push(m[4]["n"].as_u64().unwrap());
                    break;
                }
            }
        }
        numbers.sort();
        assert_eq!(
            numbers,
            (1..=n).collect::<Vec<_>>(),
            "each join got a distinct number from the owner"
        );
        // The first client saw every later join announced, in order (its own announcement may
        // have come before or after its number, so it is left out).
        let first = &mut clients[0];
        let mut seen = vec![];
        while seen.len() < (n - 1) as usize {
            let m = recv_json(first);
            if m[3] == "joined" && m[4]["n"] != 1 {
                seen.push(m[4]["n"].as_u64().unwrap());
            }
        }
        assert_eq!(seen, (2..=n).collect::<Vec<_>>());
    }
}
