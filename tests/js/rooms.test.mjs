// The room:* channel with the official phoenix.js client: messages, typing (with the automatic
// stop), user_joined/user_left counts, history across a restart and after kill -9.
import { after, before } from "node:test";
import assert from "node:assert/strict";
import {
  closeAll, collect, connect, disconnect, join, leave, makeDataDir, mintToken, push, removeDataDir,
  startServer, test,
} from "./helpers.mjs";

const PORT = 14110; // shared server of this file
const RESTART_PORT = 14111; // servers restarted inside one test
const TYPING_TIMEOUT_MS = 600;
const AUTH_ENV = { SHARDCAST_AUTH__ALLOW_ANONYMOUS: "false" };
let server;
let dataDir;

before(async () => {
  dataDir = await makeDataDir();
  server = await startServer(PORT, {
    shards: 2,
    dataDir,
    env: { ...AUTH_ENV, SHARDCAST_ROOMS__TYPING_TIMEOUT_MS: String(TYPING_TIMEOUT_MS) },
  });
});
after(async () => {
  await closeAll();
  await server?.stop();
  if (dataDir) await removeDataDir(dataDir);
});

/** A user's socket (token minted with `shardcast token` for this data directory). */
async function userSocket(port, dir, sub, name) {
  const token = await mintToken(dir, { sub, name });
  return connect(port, { token });
}

/**
 * Joins `topic` on `socket`, collecting the given events from before the join; resolves with
 * {channel, response, boxes}. Waits for room_state, the last thing a join sends.
 */
async function joinRoom(socket, topic, events = []) {
  const channel = socket.channel(topic, {});
  const boxes = {};
  for (const e of new Set(["room_state", ...events])) boxes[e] = collect(channel, e);
  const response = await join(channel);
  await boxes.room_state.count(1, undefined, `room_state on ${topic}`);
  return { channel, response, boxes };
}

test("new_message: validated, broadcast to everyone, replied ok with the same object", async () => {
  const topic = "room:chat";
  const alice = await joinRoom(await userSocket(PORT, dataDir, "alice", "Alice"), topic, ["new_message"]);
  const bob = await joinRoom(await userSocket(PORT, dataDir, "bob", "Bob"), topic, ["new_message"]);
  assert.deepEqual(alice.response, { user: { id: "alice", name: "Alice" } });

  const { status, response } = await push(alice.channel, "new_message", { body: "  hello there  " });
  assert.equal(status, "ok");
  assert.equal(response.body, "hello there");
  assert.deepEqual(response.user, { id: "alice", name: "Alice" });
  assert.ok(Number.isInteger(response.id));
  assert.ok(!Number.isNaN(Date.parse(response.inserted_at)));
  const [seenByBob] = await bob.boxes.new_message.count(1);
  assert.deepEqual(seenByBob, response);
  // The sender got the broadcast too, before its reply resolved.
  assert.deepEqual(alice.boxes.new_message.items, [response]);

  assert.deepEqual(await push(alice.channel, "new_message", { body: "   " }), {
    status: "error", response: { errors: { body: ["can't be blank"] } },
  });
  assert.deepEqual(await push(alice.channel, "new_message", { body: "x".repeat(4097) }), {
    status: "error", response: { errors: { body: ["should be at most 4096 byte(s)"] } },
  });

  // Ids increase in the order everyone sees.
  const replies = await Promise.all(
    Array.from({ length: 10 }, (_, i) => push(i % 2 ? bob.channel : alice.channel, "new_message", { body: `m${i}` })),
  );
  for (const r of replies) assert.equal(r.status, "ok");
  const seen = (await bob.boxes.new_message.count(11)).map((m) => m.id);
  assert.deepEqual(seen, [...seen].sort((a, b) => a - b));
  assert.equal(new Set(seen).size, 11);
  // Alice's copies arrive on her own socket (maybe through another shard): wait for them too.
  assert.deepEqual((await alice.boxes.new_message.count(11)).map((m) => m.id), seen);
});

test("typing: started and stopped for the others, and stopped by itself after a pause", async () => {
  const topic = "room:typing";
  const alice = await joinRoom(await userSocket(PORT, dataDir, "alice", "Alice"), topic, ["user_typing"]);
  const bob = await joinRoom(await userSocket(PORT, dataDir, "bob", "Bob"), topic, ["user_typing"]);
  const bobSees = bob.boxes.user_typing;

  assert.equal((await push(alice.channel, "typing", { typing: true })).status, "ok");
  await bobSees.count(1, undefined, "typing started");
  assert.deepEqual(bobSees.items[0], { user_id: "alice", typing: true });
  assert.equal((await push(alice.channel, "typing", { typing: false })).status, "ok");
  await bobSees.count(2, undefined, "typing stopped");
  assert.deepEqual(bobSees.items[1], { user_id: "alice", typing: false });

  // Going quiet: the stop comes by itself after the timeout.
  const started = Date.now();
  await push(alice.channel, "typing", { typing: true });
  await bobSees.count(4, TYPING_TIMEOUT_MS + 5_000, "automatic stop");
  const waited = Date.now() - started;
  assert.deepEqual(bobSees.items.slice(2), [{ user_id: "alice", typing: true }, { user_id: "alice", typing: false }]);
  assert.ok(waited >= TYPING_TIMEOUT_MS - 50, `stopped after ${waited} ms`);

  // Leaving while typing announces the stop.
  await push(alice.channel, "typing", { typing: true });
  await bobSees.count(5);
  await leave(alice.channel);
  await bobSees.count(6, undefined, "stop on leave");
  assert.deepEqual(bobSees.items[5], { user_id: "alice", typing: false });
  // Alice never heard about her own typing.
  assert.deepEqual(alice.boxes.user_typing.items, []);
});

test("user_joined / user_left count distinct users, with several tabs", async () => {
  const topic = "room:counts";
  const watcher = await joinRoom(await userSocket(PORT, dataDir, "watcher", "W"), topic, ["user_joined", "user_left"]);
  const joined = watcher.boxes.user_joined;
  const left = watcher.boxes.user_left;
  await joined.count(1);
  const aliceTab1 = await joinRoom(await userSocket(PORT, dataDir, "alice", "Alice"), topic);
  const aliceTab2Socket = await userSocket(PORT, dataDir, "alice", "Alice");
  await joinRoom(aliceTab2Socket, topic);
  const bobSocket = await userSocket(PORT, dataDir, "bob", "Bob");
  await joinRoom(bobSocket, topic);
  await joined.count(3);
  assert.deepEqual(joined.items.slice(1), [
    { user: { id: "alice", name: "Alice" }, online_count: 2 },
    { user: { id: "bob", name: "Bob" }, online_count: 3 },
  ]);

  await leave(aliceTab1.channel); // Alice still has a tab
  await disconnect(bobSocket); // Bob's only connection
  await left.count(1);
  assert.deepEqual(left.items[0], { user: { id: "bob", name: "Bob" }, online_count: 2 });
  await disconnect(aliceTab2Socket);
  await left.count(2);
  assert.deepEqual(left.items[1], { user: { id: "alice", name: "Alice" }, online_count: 1 });
  assert.equal(joined.items.length, 3, "the second tab was not announced");
});

test("room history survives a restart of the server", async () => {
  const dir = await makeDataDir();
  try {
    let s = await startServer(RESTART_PORT, { dataDir: dir, env: AUTH_ENV });
    let socket = await userSocket(RESTART_PORT, dir, "alice", "Alice");
    const first = await joinRoom(socket, "room:history");
    const sent = [];
    for (const body of ["one", "two", "three"]) sent.push((await push(first.channel, "new_message", { body })).response);
    await disconnect(socket);
    await s.stop();

    s = await startServer(RESTART_PORT, { dataDir: dir, env: AUTH_ENV });
    socket = await userSocket(RESTART_PORT, dir, "bob", "Bob");
    const again = await joinRoom(socket, "room:history");
    const [state] = again.boxes.room_state.items;
    assert.deepEqual(state.recent_messages, sent);
    assert.equal(state.room_info.message_count, 3);
    await disconnect(socket);
    await s.stop();
  } finally {
    await removeDataDir(dir);
  }
});

test("a message acknowledged just before kill -9 is there after the restart", async () => {
  const dir = await makeDataDir();
  try {
    let s = await startServer(RESTART_PORT, { dataDir: dir, env: AUTH_ENV });
    let socket = await userSocket(RESTART_PORT, dir, "alice", "Alice");
    const { channel } = await joinRoom(socket, "room:durable");
    const acked = await push(channel, "new_message", { body: "acknowledged, then the power cord" });
    assert.equal(acked.status, "ok");
    const exit = await s.kill(); // SIGKILL right after the ack
    assert.equal(exit.signal, "SIGKILL");
    await disconnect(socket);

    s = await startServer(RESTART_PORT, { dataDir: dir, env: AUTH_ENV });
    socket = await userSocket(RESTART_PORT, dir, "bob", "Bob");
    const again = await joinRoom(socket, "room:durable");
    assert.deepEqual(again.boxes.room_state.items[0].recent_messages, [acked.response]);
    await disconnect(socket);
    await s.stop();
  } finally {
    await removeDataDir(dir);
  }
});

test("room_state carries the last 50 messages, oldest first", async () => {
  const topic = "room:fifty";
  const { channel } = await joinRoom(await userSocket(PORT, dataDir, "alice", "Alice"), topic);
  const sent = [];
  for (let i = 0; i < 55; i++) sent.push((await push(channel, "new_message", { body: `n${i}` })).response);
  const late = await joinRoom(await userSocket(PORT, dataDir, "carol", "Carol"), topic);
  assert.deepEqual(late.boxes.room_state.items[0].recent_messages, sent.slice(5));
});
