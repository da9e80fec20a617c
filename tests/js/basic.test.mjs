import { after, before } from "node:test";
import assert from "node:assert/strict";
import {
  Mailbox, RawClient, closeAll, connect, connectAndJoin, disconnect, join, leave, push, startServer, test,
} from "./helpers.mjs";

const PORT = 14101;
let server;

before(async () => {
  server = await startServer(PORT);
});
after(async () => {
  await closeAll();
  await server?.stop();
});

test("join echo:lobby replies ok", async () => {
  const { channel } = await connectAndJoin(PORT, "echo:lobby");
  assert.equal(channel.state, "joined");
});

test("echo replies with the pushed payload", async () => {
  const { channel } = await connectAndJoin(PORT, "echo:lobby");
  const payload = { text: "hello", n: 42, nested: { list: [1, "two", null, true] } };
  assert.deepEqual(await push(channel, "echo", payload), { status: "ok", response: payload });
});

test("unknown event gets an error reply with a reason", async () => {
  const { channel } = await connectAndJoin(PORT, "echo:lobby");
  const { status, response } = await push(channel, "nope", {});
  assert.equal(status, "error");
  assert.equal(typeof response.reason, "string");
});

test("joining an unrouted topic fails with 'unmatched topic'", async () => {
  const socket = await connect(PORT);
  const err = await join(socket.channel("nosuch:topic")).then(
    () => assert.fail("join unexpectedly succeeded"),
    (e) => e,
  );
  assert.deepEqual(err.response, { reason: "unmatched topic" });
  await disconnect(socket); // stops phoenix.js from retrying the join
});

test("heartbeats are answered and the socket stays connected", async () => {
  const socket = await connect(PORT, {}, { heartbeatIntervalMs: 100 });
  let closed = false;
  socket.onClose(() => (closed = true));
  const heartbeats = new Mailbox();
  socket.onMessage((msg) => {
    if (msg.topic === "phoenix" && msg.event === "phx_reply") heartbeats.put(msg.payload);
  });
  const replies = await heartbeats.count(5, 5_000, "5 heartbeat replies");
  for (const payload of replies) assert.deepEqual(payload, { status: "ok", response: {} });
  assert.equal(closed, false, "socket closed during heartbeats");
  assert.ok(socket.isConnected());
});

test("leave replies ok; pushes to a left topic get 'unmatched topic'", async () => {
  const { channel } = await connectAndJoin(PORT, "echo:lobby");
  assert.equal((await leave(channel)).status, "ok");
  assert.equal(channel.state, "closed");

  const raw = await RawClient.open(PORT);
  assert.deepEqual(await raw.request("1", "1", "echo:lobby", "phx_join"), [
    "1", "1", "echo:lobby", "phx_reply", { response: {}, status: "ok" },
  ]);
  assert.equal((await raw.request("1", "2", "echo:lobby", "phx_leave"))[4].status, "ok");
  assert.deepEqual(await raw.request("1", "3", "echo:lobby", "echo", { x: 1 }), [
    null, "3", "echo:lobby", "phx_reply", { response: { reason: "unmatched topic" }, status: "error" },
  ]);
});
