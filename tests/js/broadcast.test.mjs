import { after, before } from "node:test";
import assert from "node:assert/strict";
import { closeAll, collect, connectAndJoin, push, startServer, test } from "./helpers.mjs";

const PORT = 14102;
const TOPIC = "echo:room1";
let server;

before(async () => {
  server = await startServer(PORT);
});
after(async () => {
  await closeAll();
  await server?.stop();
});

/** Three clients joined to TOPIC, each collecting its `broadcast` events. */
async function room() {
  const clients = await Promise.all([1, 2, 3].map(() => connectAndJoin(PORT, TOPIC)));
  return clients.map((c) => ({ ...c, inbox: collect(c.channel, "broadcast") }));
}

// Clients of earlier tests stay subscribed; payloads carry the test's `id` for readable failures.
// A final "fence" broadcast makes duplicates visible: one publisher's messages arrive in order,
// so a duplicate of an earlier message would show up before the fence.

test("a broadcast reaches every subscriber, sender included, exactly once", async () => {
  const clients = await room();
  const [sender] = clients;
  assert.deepEqual(await push(sender.channel, "broadcast", { id: "once", n: 1 }), { status: "ok", response: {} });
  // The sender receives the broadcast before the reply to its push.
  assert.deepEqual(sender.inbox.items, [{ id: "once", n: 1 }]);

  assert.equal((await push(sender.channel, "broadcast", { id: "once", fence: true })).status, "ok");
  for (const { inbox } of clients) {
    await inbox.count(2);
    assert.deepEqual(inbox.items, [{ id: "once", n: 1 }, { id: "once", fence: true }]);
  }
});

test("consecutive broadcasts arrive in publish order at every client", async () => {
  const clients = await room();
  const expected = Array.from({ length: 20 }, (_, n) => ({ id: "order", n }));
  const replies = expected.map((payload) => push(clients[1].channel, "broadcast", payload));
  for (const r of await Promise.all(replies)) assert.equal(r.status, "ok");
  for (const { inbox } of clients) {
    await inbox.count(expected.length);
    assert.deepEqual(inbox.items, expected);
  }
});
