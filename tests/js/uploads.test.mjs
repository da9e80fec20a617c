// Resumable uploads with the official phoenix.js client: a multi-megabyte file sent in shuffled
// and duplicated chunks, the connection killed halfway, the upload resumed on a new connection on
// the other shard; the stored file's sha256 matches.
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join as joinPath } from "node:path";
import {
  closeAll, connect, disconnect, join, makeDataDir, mintToken, push, removeDataDir, shardConnections, startServer,
  test, waitFor,
} from "./helpers.mjs";
import { chunkPlan, encodeUploadChunk, toArrayBuffer } from "../../clients/js/shardcast-binary.mjs";

const PORT = 14133;
let server;
let dataDir;

before(async () => {
  dataDir = await makeDataDir();
  server = await startServer(PORT, { shards: 2, dataDir, env: { SHARDCAST_AUTH__ALLOW_ANONYMOUS: "false" } });
});
after(async () => {
  await closeAll();
  await server?.stop();
  if (dataDir) await removeDataDir(dataDir);
});

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

function shuffle(items) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

async function totalConnections() {
  return Object.values(await shardConnections(PORT)).reduce((a, b) => a + b, 0);
}

/** Connects and joins `uploads:<user>`; returns {socket, channel, shard}. */
async function openUploads(token, user, notOnShard) {
  for (let attempt = 0; attempt < 60; attempt++) {
    await waitFor(async () => (await totalConnections()) === 0, { what: "no connection left" });
    const socket = await connect(PORT, { token }, { reconnectAfterMs: () => 60_000 });
    await waitFor(async () => (await totalConnections()) === 1, { what: "the new connection counted" });
    const perShard = await shardConnections(PORT);
    const shard = Object.keys(perShard).find((s) => perShard[s] === 1);
    if (shard !== notOnShard) {
      const channel = socket.channel(`uploads:${user}`, {});
      const response = await join(channel);
      assert.equal(response.user_id, user);
      return { socket, channel, shard };
    }
    await disconnect(socket); // the kernel picks a connection's shard: try again
  }
  throw new Error(`no connection landed on a shard other than ${notOnShard}`);
}

function chunkOf(file, plan, i) {
  return file.subarray(plan.offset(i), plan.offset(i) + plan.length(i));
}

test("a shuffled, duplicated upload survives a killed connection and resumes on another shard", async () => {
  const user = "uploader";
  const token = await mintToken(dataDir, { sub: user, name: "Uploader" });
  const file = randomBytes(3 * 1024 * 1024 + 777);
  const CHUNK = 64 * 1024;
  const plan = chunkPlan(file.length, CHUNK);
  const meta = { filename: "level-7.pak", size: file.length, sha256: sha256(file), chunk_size: CHUNK };

  const first = await openUploads(token, user, undefined);
  const started = await push(first.channel, "upload_start", meta);
  assert.equal(started.status, "ok", JSON.stringify(started.response));
  const { upload_id: uploadId, total_chunks: total, missing } = started.response;
  assert.match(uploadId, /^[0-9a-f]{32}$/);
  assert.equal(total, plan.totalChunks);
  assert.deepEqual(missing, [...Array(total).keys()]);

  // Half the chunks in random order, some twice, four in flight at a time...
  const order = shuffle([...Array(total).keys()]);
  const firstHalf = order.slice(0, Math.floor(total / 2));
  const sendList = [...firstHalf, firstHalf[0], firstHalf[3], firstHalf[5]];
  const inFlight = new Set();
  for (const i of sendList) {
    if (inFlight.size >= 4) await Promise.race(inFlight);
    const p = push(first.channel, "upload_chunk", toArrayBuffer(encodeUploadChunk({ uploadId, chunkIndex: i, totalChunks: total }, chunkOf(file, plan, i))));
    const tracked = p.then((r) => {
      assert.equal(r.status, "ok", JSON.stringify(r.response));
      assert.equal(r.response.upload_complete, false);
      inFlight.delete(tracked);
    });
    inFlight.add(tracked);
  }
  await Promise.all(inFlight);
  // ...then a few more sent without waiting, and the connection killed under them (no close).
  for (const i of order.slice(firstHalf.length, firstHalf.length + 3)) {
    first.channel.push("upload_chunk", toArrayBuffer(encodeUploadChunk({ uploadId, chunkIndex: i, totalChunks: total }, chunkOf(file, plan, i))));
  }
  first.socket.conn.terminate();
  await disconnect(first.socket);

  // A new connection, on the other shard, resumes: the chunks still missing.
  const second = await openUploads(token, user, first.shard);
  assert.notEqual(second.shard, first.shard);
  const resumed = await push(second.channel, "upload_start", { ...meta, upload_id: uploadId });
  assert.equal(resumed.status, "ok", JSON.stringify(resumed.response));
  const stillMissing = resumed.response.missing;
  for (const i of firstHalf) assert.ok(!stillMissing.includes(i), `chunk ${i} was acknowledged before the kill`);
  assert.ok(stillMissing.length >= total - firstHalf.length - 3 && stillMissing.length <= total - firstHalf.length);

  // The rest (shuffled, with duplicates of chunks already stored), four in flight at a time.
  const rest = shuffle([...stillMissing, firstHalf[1], stillMissing[0]]);
  const answers = [];
  const pending = new Set();
  for (const i of rest) {
    if (pending.size >= 4) await Promise.race(pending);
    const p = push(second.channel, "upload_chunk", toArrayBuffer(encodeUploadChunk({ uploadId, chunkIndex: i, totalChunks: total }, chunkOf(file, plan, i))), 15_000);
    const tracked = p.then((r) => {
      assert.equal(r.status, "ok", JSON.stringify(r.response));
      answers.push(r.response);
      pending.delete(tracked);
    });
    pending.add(tracked);
  }
  await Promise.all(pending);
  const done = answers.find((a) => a.upload_complete);
  assert.ok(done, `one answer carries the verdict: ${JSON.stringify(answers.slice(-3))}`);
  assert.equal(done.sha256, sha256(file));
  assert.equal(done.size, file.length);
  const stored = await readFile(joinPath(dataDir, "uploads", "files", done.file_id));
  assert.equal(sha256(stored), sha256(file), "the file on disk matches");
  const description = JSON.parse(await readFile(joinPath(dataDir, "uploads", "files", `${done.file_id}.json`), "utf8"));
  assert.equal(description.filename, "level-7.pak");

  // Asking again answers the completion (idempotent).
  const again = await push(second.channel, "upload_start", { ...meta, upload_id: uploadId });
  assert.equal(again.response.upload_complete, true);
  assert.equal(again.response.file_id, done.file_id);
});
