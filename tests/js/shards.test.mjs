import { after, before } from "node:test";
import assert from "node:assert/strict";
import { closeAll, collect, connectAndJoin, disconnect, push, shardConnections, startServer, test } from "./helpers.mjs";

const PORT = 14104;
const TOPIC = "echo:cross";
const CLIENTS = 16;
const MESSAGES = 5; // per publisher
const MAX_ATTEMPTS = 64; // total connections opened while trying to cover both shards
let server;

before(async () => {
  server = await startServer(PORT, { shards: 2 });
});
after(async () => {
  await closeAll();
  await server?.stop();
});

test("clients on both shards receive every broadcast once, in per-publisher order", async () => {
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => connectAndJoin(PORT, TOPIC)));

  // The kernel picks the shard of a connection. If one shard got none, all clients sit on
  // the other one, so replacing any client can only improve the spread.
  let attempts = CLIENTS;
  let perShard = await shardConnections(PORT);
  while (!(perShard["0"] > 0 && perShard["1"] > 0) && attempts < MAX_ATTEMPTS) {
    const i = attempts % CLIENTS;
    await disconnect(clients[i].socket);
    clients[i] = await connectAndJoin(PORT, TOPIC);
    attempts++;
    perShard = await shardConnections(PORT);
  }
  assert.ok(perShard["0"] > 0 && perShard["1"] > 0,
    `expected connections on both shards after ${attempts} connections, metrics: ${JSON.stringify(perShard)}`);

  const inboxes = clients.map((c) => collect(c.channel, "broadcast"));
  const replies = clients.flatMap((c, from) =>
    Array.from({ length: MESSAGES }, (_, seq) => push(c.channel, "broadcast", { from, seq })));
  // A final message per publisher is its fence: duplicates of earlier ones would arrive before it.
  replies.push(...clients.map((c, from) => push(c.channel, "broadcast", { from, seq: MESSAGES })));
  for (const r of await Promise.all(replies)) assert.equal(r.status, "ok");

  const total = CLIENTS * (MESSAGES + 1);
  const expected = Array.from({ length: MESSAGES + 1 }, (_, seq) => seq);
  for (const [i, inbox] of inboxes.entries()) {
    await inbox.count(total, 10_000, `${total} broadcasts at client ${i}`);
    for (let from = 0; from < CLIENTS; from++) {
      const seqs = inbox.items.filter((m) => m.from === from).map((m) => m.seq);
      assert.deepEqual(seqs, expected, `client ${i}: messages from publisher ${from}`);
    }
    assert.equal(inbox.items.length, total, `client ${i} received extra messages`);
  }
});
