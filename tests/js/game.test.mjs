// game:* with the official phoenix.js client: game state at 60 Hz between clients, the
// latest-value policy for a subscriber that stops reading (the server's memory stays flat), and
// compressed bulk updates, including a zstd bomb refused without memory growth.
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { decompress } from "fzstd";
import {
  closeAll, collect, connectAndJoin, push, startServer, test, withTimeout,
} from "./helpers.mjs";
import { MiB, metric, pauseReading, resumeReading, serverRss, tick } from "./binary-fast-path.mjs";
import {
  decodeCompressedData, decodeGameState, encodeCompressedData, encodeGameState, toArrayBuffer, zstdStoreFrame,
} from "../../clients/js/shardcast-binary.mjs";

const PORT = 14130;
const TOPIC_PORT = 14131;
let server;
let topicServer;

before(async () => {
  server = await startServer(PORT, {
    env: {
      // Large states, so a subscriber that does not read falls behind the kernel's buffers.
      SHARDCAST_GAME__MAX_POSITIONS: "10000",
    },
  });
  topicServer = await startServer(TOPIC_PORT, { env: { SHARDCAST_GAME__LATEST_PER: "topic" } });
});
after(async () => {
  await closeAll();
  await server?.stop();
  await topicServer?.stop();
});

const HZ = 60;
/** The x of each player's last state (inside the default world bounds). */
const FINAL = 9_999;

/** A state from player `player` at frame `frame`, with `extra` more positions. */
function stateOf(player, frame, extra = 0) {
  const positions = [{ playerId: player, x: frame, y: -frame }];
  for (let i = 0; i < extra; i++) positions.push({ playerId: 1000 + i, x: i % 5000, y: (i * 7) % 5000 });
  return toArrayBuffer(encodeGameState({ positions, objects: [{ type: "projectile", x: 1, y: 2, data: new Uint8Array([player]) }] }));
}

/**
 * Three clients in `topic` on the server at `port` publish their own state at 60 Hz for a second,
 * then a final state each in turn. Returns, per receiver, the x values received from each player.
 */
async function exchangeAt60Hz(port, topic) {
  const clients = await Promise.all([0, 1, 2].map(() => connectAndJoin(port, topic)));
  const inboxes = clients.map((c) => collect(c.channel, "game_update"));
  const frames = HZ;
  await Promise.all(
    clients.map(async (c, player) => {
      const replies = [];
      for (let frame = 0; frame < frames; frame++) {
        replies.push(push(c.channel, "game_state", stateOf(player, frame)));
        await tick(1000 / HZ);
      }
      for (const r of await Promise.all(replies)) assert.equal(r.status, "ok", JSON.stringify(r.response));
    }),
  );
  // Then each sends a final state in turn, once the previous one has reached everybody.
  for (let player = 0; player < clients.length; player++) {
    assert.equal((await push(clients[player].channel, "game_state", stateOf(player, FINAL))).status, "ok");
    await Promise.all(
      inboxes.map((box, i) =>
        i === player
          ? null
          : box.until(
              (items) => items.some((b) => decodeGameState(b).positions[0].x === FINAL && decodeGameState(b).positions[0].playerId === player),
              5_000,
              `final state of ${player} at ${i}`,
            ),
      ),
    );
  }
  return inboxes.map((box, me) => {
    const byPlayer = new Map();
    for (const buf of box.items) {
      const { positions, objects } = decodeGameState(buf);
      const player = positions[0].playerId;
      assert.notEqual(player, me, "a client never gets its own state back");
      assert.equal(objects[0].data[0], player);
      (byPlayer.get(player) ?? byPlayer.set(player, []).get(player)).push(positions[0].x);
    }
    assert.equal(byPlayer.size, clients.length - 1, `${me} hears every other player`);
    for (const [player, xs] of byPlayer) {
      assert.ok(xs.every((x, i) => i === 0 || x > xs[i - 1]), `updates of ${player} in publish order at ${me}`);
      assert.equal(xs.at(-1), FINAL, `the latest state of ${player} reached ${me}`);
    }
    return byPlayer;
  });
}

const counts = (received) => received.map((byPlayer) => [...byPlayer.values()].map((xs) => xs.length - 1));

test("clients exchange game state at 60 Hz and receive each other's updates", async () => {
  // Default policy (latest value per topic and sender): a subscriber has at most one queued
  // game_update per publishing member; readers that keep up get (nearly) every frame of every
  // player.
  const perSender = await exchangeAt60Hz(PORT, "game:sixty");
  // `latest_per = "topic"`: at most one queued game_update per topic, so states that several
  // members publish in the same instant supersede each other even for subscribers that keep up.
  // Every player is still heard, in order, up to its latest state.
  const perTopic = await exchangeAt60Hz(TOPIC_PORT, "game:sixty");
  console.log(`updates received of ${HZ} per other player: latest per topic ${JSON.stringify(counts(perTopic))}, per sender ${JSON.stringify(counts(perSender))}`);
  for (const n of counts(perSender).flat()) assert.ok(n >= HZ * 0.9, `${n} of ${HZ} updates`);
});

test("a subscriber that stops reading gets the latest state when it resumes; the server's memory stays flat", async () => {
  const topic = "game:slow";
  const publisher = await connectAndJoin(PORT, topic);
  const fast = await connectAndJoin(PORT, topic);
  const slow = await connectAndJoin(PORT, topic);
  const fastBox = collect(fast.channel, "game_update");
  const slowBox = collect(slow.channel, "game_update");
  const EXTRA = 8000; // ~96 KB per state
  // Warm up, then measure.
  for (let frame = 0; frame < 5; frame++) await push(publisher.channel, "game_state", stateOf(7, frame, EXTRA));
  await slowBox.count(5);
  const droppedBefore = await metric(PORT, "frames_dropped_by_policy");
  const slowConsumersBefore = await metric(PORT, "slow_consumer_disconnects");
  const rssBefore = await serverRss(server);

  pauseReading(slow.socket);
  const seconds = 5;
  const published = HZ * seconds; // ~29 MB: far beyond what the kernel buffers hold
  let rssPeak = rssBefore;
  const replies = [];
  for (let frame = 5; frame < 5 + published; frame++) {
    replies.push(push(publisher.channel, "game_state", stateOf(7, frame, EXTRA), 10_000));
    if (frame % HZ === 0) rssPeak = Math.max(rssPeak, await serverRss(server));
    await tick(1000 / HZ);
  }
  for (const r of await Promise.all(replies)) assert.equal(r.status, "ok");
  const last = 5 + published - 1;
  await fastBox.until((items) => decodeGameState(items.at(-1)).positions[0].x === last, 10_000, "the fast subscriber's last update");
  rssPeak = Math.max(rssPeak, await serverRss(server));
  const dropped = (await metric(PORT, "frames_dropped_by_policy")) - droppedBefore;

  resumeReading(slow.socket);
  await slowBox.until((items) => items.length > 0 && decodeGameState(items.at(-1)).positions[0].x === last, 10_000, "the latest state after resuming");
  const slowFrames = slowBox.items.slice(5).map((b) => decodeGameState(b).positions[0].x);
  const growth = rssPeak - rssBefore;
  console.log(
    `published ${published} states (~${Math.round((published * 96) / 1024)} MiB); the paused subscriber got ` +
      `${slowFrames.length} after resuming, ${dropped} replaced by newer ones; server RSS ${Math.round(rssBefore / MiB)} MiB, ` +
      `peak growth ${(growth / MiB).toFixed(1)} MiB`,
  );
  assert.ok(slowFrames.every((x, i) => i === 0 || x > slowFrames[i - 1]), "still in publish order");
  assert.ok(slowFrames.length < published, "superseded states were not delivered");
  assert.ok(dropped > 0, "frames_dropped_by_policy counts the replaced states");
  assert.equal(await metric(PORT, "slow_consumer_disconnects"), slowConsumersBefore, "nobody was disconnected");
  assert.ok(growth < 48 * MiB, `server memory grew by ${(growth / MiB).toFixed(1)} MiB`);
  // The slow subscriber's connection lives on.
  assert.equal((await push(slow.channel, "game_state", stateOf(8, 1))).status, "ok");
  const fastInOrder = fastBox.items
    .slice(5)
    .map((b) => decodeGameState(b).positions[0])
    .filter((p) => p.playerId === 7)
    .map((p) => p.x);
  assert.ok(fastInOrder.every((x, i) => i === 0 || x > fastInOrder[i - 1]));
});

test("invalid game state gets an error reply with a reason and the connection lives on", async () => {
  const { channel } = await connectAndJoin(PORT, "game:errors");
  const outOfWorld = toArrayBuffer(encodeGameState({ positions: [{ playerId: 1, x: 1e9, y: 0 }] }));
  const unknownType = toArrayBuffer(encodeGameState({ objects: [{ type: "dragon", x: 0, y: 0 }] }));
  const truncated = stateOf(1, 1).slice(0, 10);
  for (const [payload, reason] of [[outOfWorld, "out_of_bounds"], [unknownType, "unknown_object_type"], [truncated, "malformed"]]) {
    const { status, response } = await push(channel, "game_state", payload);
    assert.equal(status, "error");
    assert.equal(response.reason, reason);
  }
  assert.equal((await push(channel, "game_state", stateOf(1, 2))).status, "ok");
});

/** A zstd frame of RLE blocks: `blocks` x 128 KiB of zeros, with or without the content size. */
function zstdBomb(blocks, declare) {
  const header = declare ? [0xc0, 0x38, ...bigU64(BigInt(blocks) * 131072n)] : [0x00, 0x38];
  const out = [0x28, 0xb5, 0x2f, 0xfd, ...header];
  for (let i = 0; i < blocks; i++) {
    const h = (i === blocks - 1 ? 1 : 0) | (1 << 1) | (131072 << 3);
    out.push(h & 0xff, (h >>> 8) & 0xff, (h >>> 16) & 0xff, 0);
  }
  return toArrayBuffer(new Uint8Array(out));
}

function bigU64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return [...b];
}

test("compressed bulk updates reach the others; a zstd bomb is refused without memory growth", async () => {
  const topic = "game:bulk";
  const a = await connectAndJoin(PORT, topic);
  const b = await connectAndJoin(PORT, topic);
  const bulk = collect(b.channel, "bulk_update");
  const errors = collect(a.channel, "error");
  const updates = Array.from({ length: 200 }, (_, i) => ({ id: i, hp: 100 - (i % 9) }));
  assert.equal((await push(a.channel, "compressed_data", toArrayBuffer(encodeCompressedData(updates)))).status, "ok");
  const [frame] = await bulk.count(1);
  assert.deepEqual(decodeCompressedData(frame, { decompress }), updates);

  const declared = zstdBomb(8192, true); // 1 GiB of zeros, declared, in 32 KiB
  const undeclared = zstdBomb(8192, false); // the same, size not declared: stopped at 16 MiB
  assert.ok(declared.byteLength < 40_000);
  // One of each first: what a refusal costs at most, then many more must not add to it.
  for (const bomb of [declared, undeclared]) {
    const { status, response } = await push(a.channel, "compressed_data", bomb);
    assert.equal(status, "error");
    assert.equal(response.reason, "too_large");
  }
  const rssBefore = await serverRss(server);
  let rssPeak = rssBefore;
  const ROUNDS = 20;
  for (let i = 0; i < ROUNDS; i++) {
    for (const bomb of [declared, undeclared]) {
      const { status, response } = await push(a.channel, "compressed_data", bomb);
      assert.equal(status, "error");
      assert.equal(response.reason, "too_large");
    }
    rssPeak = Math.max(rssPeak, await serverRss(server));
  }
  await errors.count(2 * (ROUNDS + 1));
  assert.ok(errors.items.every((e) => e.reason === "too_large" && e.message.length > 0));
  const growth = rssPeak - rssBefore;
  console.log(`${2 * ROUNDS} zstd bombs (1 GiB of content each) refused; server RSS ${Math.round(rssBefore / MiB)} MiB, peak growth ${(growth / MiB).toFixed(1)} MiB`);
  assert.ok(growth < 8 * MiB, `server memory grew by ${(growth / MiB).toFixed(1)} MiB`);

  // Unknown type, not zstd at all: push `error` {message} too; the connection lives on.
  const otherType = zstdStoreFrame(new TextEncoder().encode('{"type":"chat","updates":[]}'));
  for (const [payload, reason] of [[toArrayBuffer(otherType), "unknown_type"], [toArrayBuffer(new Uint8Array([1, 2, 3])), "invalid_compression"]]) {
    const { status, response } = await push(a.channel, "compressed_data", payload);
    assert.equal(status, "error");
    assert.equal(response.reason, reason);
  }
  await errors.until((items) => items.at(-1)?.reason === "invalid_compression");
  assert.equal((await push(a.channel, "compressed_data", toArrayBuffer(encodeCompressedData([{ ok: true }])))).status, "ok");
  const [, second] = await withTimeout(bulk.count(2), 5_000, "second bulk update");
  assert.deepEqual(decodeCompressedData(second, { decompress }), [{ ok: true }]);
});
