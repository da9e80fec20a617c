import { after } from "node:test";
import assert from "node:assert/strict";
import { Mailbox, closeAll, connect, join, push, startServer, test } from "./helpers.mjs";

const PORT = 14105;
const TOPIC = "echo:r";
let server;

after(async () => {
  await closeAll();
  await server?.stop();
});

test("phoenix.js reconnects and rejoins after a server restart", async () => {
  server = await startServer(PORT);
  const socket = await connect(PORT, {}, { reconnectAfterMs: () => 100, rejoinAfterMs: () => 100 });
  const channel = socket.channel(TOPIC);

  // Successful join replies (ref === join_ref) and channel errors, as they happen.
  const joins = new Mailbox();
  socket.onMessage(({ topic, event, ref, join_ref, payload }) => {
    if (topic === TOPIC && event === "phx_reply" && ref === join_ref && payload.status === "ok") joins.put(ref);
  });
  const errors = new Mailbox();
  channel.onError((reason) => errors.put(reason));

  await join(channel);
  assert.deepEqual(await push(channel, "echo", { before: true }), { status: "ok", response: { before: true } });

  await server.stop();
  await errors.count(1, 5_000, "the channel to notice the lost connection");
  assert.equal(socket.isConnected(), false);

  server = await startServer(PORT);
  await joins.count(2, 10_000, "the automatic rejoin");
  assert.ok(socket.isConnected());
  assert.deepEqual(await push(channel, "echo", { after: true }), { status: "ok", response: { after: true } });
});
