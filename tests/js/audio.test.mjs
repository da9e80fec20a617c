// Audio with the official phoenix.js client: three members, one of which stops reading. The
// others get every frame in order; the slow one keeps a bounded budget per sender and sees the
// frames it lost as gaps in `seq`.
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { closeAll, collect, connectAndJoin, push, startServer, test } from "./helpers.mjs";
import { MiB, metric, pauseReading, resumeReading, serverRss } from "./binary-fast-path.mjs";
import { decodeAudioStream, toArrayBuffer } from "../../clients/js/shardcast-binary.mjs";

const PORT = 14132;
let server;

before(async () => {
  // Large frames so that a member that stops reading fills the kernel's buffers within the test.
  server = await startServer(PORT, { env: { SHARDCAST_AUDIO__MAX_FRAME_BYTES: "65536" } });
});
after(async () => {
  await closeAll();
  await server?.stop();
});

test("audio between three clients: a slow reader loses old frames (seq gaps), the others nothing", async () => {
  const topic = "voice:squad";
  const [speaker, listener, slow] = await Promise.all([0, 1, 2].map(() => connectAndJoin(PORT, topic)));
  const heard = collect(listener.channel, "audio_stream");
  const slowHeard = collect(slow.channel, "audio_stream");
  const droppedBefore = await metric(PORT, "frames_dropped_by_policy");
  const rssBefore = await serverRss(server);

  pauseReading(slow.socket);
  const FRAMES = 400;
  const SIZE = 48 * 1024; // ~19 MB in all: more than the kernel buffers the slow reader's socket
  for (let seq = 0; seq < FRAMES; seq++) {
    // Random bytes, as encoded audio is: permessage-deflate (which the ws transport negotiates)
    // cannot shrink them, so the slow reader's backlog is as large as the frames.
    const frame = crypto.getRandomValues(new Uint8Array(SIZE));
    new DataView(frame.buffer).setUint32(0, seq, true);
    const { status } = await push(speaker.channel, "audio_data", toArrayBuffer(frame));
    assert.equal(status, "ok");
  }
  // The listener that keeps up gets every frame, in order, with consecutive seq.
  await heard.count(FRAMES, 20_000);
  heard.items.forEach((buf, i) => {
    const { userId, seq, audio, serverTimestampMs } = decodeAudioStream(buf);
    assert.equal(seq, i);
    assert.ok(userId.startsWith("guest-"), userId);
    assert.equal(audio.length, SIZE);
    assert.equal(new DataView(audio.buffer, audio.byteOffset).getUint32(0, true), i, "the sender's own bytes");
    assert.ok(Math.abs(serverTimestampMs - Date.now()) < 60_000);
  });
  const rssAfter = await serverRss(server);
  const dropped = (await metric(PORT, "frames_dropped_by_policy")) - droppedBefore;

  resumeReading(slow.socket);
  await slowHeard.until((items) => items.length > 0 && decodeAudioStream(items.at(-1)).seq === FRAMES - 1, 20_000, "the slow reader's last frame");
  const seqs = slowHeard.items.map((b) => decodeAudioStream(b).seq);
  const gaps = seqs.filter((s, i) => i > 0 && s !== seqs[i - 1] + 1).length;
  console.log(
    `${FRAMES} frames of ${SIZE} bytes: the listener got all, the slow reader ${seqs.length} with ${gaps} gaps; ` +
      `${dropped} dropped by the per-sender budget; server RSS ${Math.round(rssBefore / MiB)} MiB, growth ${((rssAfter - rssBefore) / MiB).toFixed(1)} MiB`,
  );
  assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), "in order");
  assert.ok(seqs.length < FRAMES && gaps > 0, "frames were dropped for the slow reader, visible as seq gaps");
  assert.equal(dropped, FRAMES - seqs.length, "every frame the slow reader missed is counted");
  assert.ok(rssAfter - rssBefore < 48 * MiB);
  // The budget keeps the newest frames: the last 10 (200 ms / 20 ms) arrived without a gap.
  assert.deepEqual(seqs.slice(-10), Array.from({ length: 10 }, (_, i) => FRAMES - 10 + i));
  // The slow member is still connected and can speak.
  assert.equal((await push(slow.channel, "audio_data", toArrayBuffer(new Uint8Array([1, 2, 3])))).status, "ok");
  const [last] = (await heard.count(FRAMES + 1)).slice(-1);
  assert.equal(decodeAudioStream(last).seq, 0, "a new sender starts its own seq");
});
