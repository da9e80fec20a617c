import { after, before } from "node:test";
import assert from "node:assert/strict";
import { closeAll, collect, connectAndJoin, push, startServer, test } from "./helpers.mjs";

const PORT = 14103;
let server;

before(async () => {
  server = await startServer(PORT);
});
after(async () => {
  await closeAll();
  await server?.stop();
});

// phoenix.js encodes an ArrayBuffer payload as a V2 binary frame and decodes binary frames
// (it sets binaryType = "arraybuffer" on the transport, which `ws` honours) back to ArrayBuffers.
function assertBytes(actual, expected) {
  assert.ok(actual instanceof ArrayBuffer, `expected an ArrayBuffer, got ${Object.prototype.toString.call(actual)}`);
  assert.deepEqual([...new Uint8Array(actual)], [...expected]);
}

test("binary echo replies with the same bytes", async () => {
  const { channel } = await connectAndJoin(PORT, "echo:bin");
  const bytes = new Uint8Array([1, 2, 3, 255]);
  const { status, response } = await push(channel, "echo", bytes.buffer);
  assert.equal(status, "ok");
  assertBytes(response, bytes);
});

test("larger binary echo (16 KiB, all byte values) round-trips", async () => {
  const { channel } = await connectAndJoin(PORT, "echo:bin");
  const bytes = Uint8Array.from({ length: 16 * 1024 }, (_, i) => i % 256);
  const { status, response } = await push(channel, "echo", bytes.buffer);
  assert.equal(status, "ok");
  assertBytes(response, bytes);
});

test("binary broadcast reaches every client as the same bytes", async () => {
  const clients = await Promise.all([1, 2, 3].map(() => connectAndJoin(PORT, "echo:binroom")));
  const inboxes = clients.map((c) => collect(c.channel, "broadcast"));
  const bytes = new Uint8Array([0, 10, 128, 255, 7]);
  assert.equal((await push(clients[0].channel, "broadcast", bytes.buffer)).status, "ok");
  for (const inbox of inboxes) {
    const [payload] = await inbox.count(1);
    assertBytes(payload, bytes);
    assert.equal(inbox.items.length, 1);
  }
});
