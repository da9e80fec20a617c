// `document:*` channels driven by phoenix.js through the shipped client
// (clients/js/shardcast-ot.mjs): concurrent editors on two shards converge to the server's text
// (one of them losing its connection midway), an acknowledged operation survives kill -9 and a
// restart (and one in flight at the kill is applied at most once), an edit the server refuses
// for good is rolled back to the server's text, and a missing document is refused when
// documents are not created on join.
import { after } from "node:test";
import assert from "node:assert/strict";
import { closeAll, connect, makeDataDir, removeDataDir, startServer, test } from "./helpers.mjs";
import { DocumentSession, TextOperation } from "../../clients/js/shardcast-ot.mjs";

const PORTS = { converge: 14120, kill: 14121, missing: 14122, limits: 14123 };
const FAST_RECONNECT = { reconnectAfterMs: () => 50, rejoinAfterMs: () => 50 };
const servers = [];
const dirs = [];

after(async () => {
  await closeAll();
  for (const s of servers) await s.stop();
  for (const d of dirs) await removeDataDir(d);
});

async function start(port, opts) {
  const server = await startServer(port, opts);
  servers.push(server);
  return server;
}

/** Seeded random numbers, so a failure can be replayed. */
function rng(seed) {
  let s = seed >>> 0 || 1;
  return {
    below(n) {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      return n <= 0 ? 0 : s % n;
    },
  };
}

const PIECES = ["a", "b", " ", "é", "e\u0301", "😀", "👍🏽", "\n", "xyz"];

/** A random edit at code-point boundaries, as an editor would make it. */
function randomEdit(r, text) {
  const points = [0];
  let at = 0;
  for (const ch of text) points.push((at += ch.length));
  const i = r.below(points.length);
  if (points.length > 1 && r.below(3) === 0) {
    const j = Math.min(points.length - 1, i + 1 + r.below(3));
    if (j > i) return TextOperation.deleteAt(text.length, points[i], points[j] - points[i]);
  }
  return TextOperation.insertAt(text.length, points[i], PIECES[r.below(PIECES.length)]);
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test("three phoenix.js editors on two shards converge to the server's text", async () => {
  const port = PORTS.converge;
  await start(port, { shards: 2 });
  const seed = Number(process.env.DOC_SEED ?? Date.now() % 100_000);
  const r = rng(seed);
  const sockets = await Promise.all([0, 1, 2].map(() => connect(port, {}, FAST_RECONNECT)));
  const sessions = sockets.map((socket, i) => new DocumentSession(socket, "race", { clientId: `editor-${i}` }));
  await Promise.all(sessions.map((s) => s.join()));
  const errors = [];
  for (const s of sessions) s.onError = (reason) => errors.push(reason);

  const EDITS = 60;
  await Promise.all(
    sessions.map(async (session, i) => {
      for (let k = 0; k < EDITS; k++) {
        // Random think time: editors interleave differently on every run (load, not sync).
        if (r.below(3) === 0) await pause(r.below(12));
        session.edit(randomEdit(r, session.text));
        if (i === 1 && k === EDITS / 2) {
          // The connection drops with edits in flight; edits go on while it is away.
          await new Promise((resolve) => sockets[1].disconnect(resolve));
          session.edit(randomEdit(r, session.text));
          sockets[1].connect();
        }
      }
    }),
  );
  await Promise.all(sessions.map((s) => s.whenSynchronized(20_000)));

  // Every edit is acknowledged, so the server has them all; a new client reads its text.
  const observer = new DocumentSession(await connect(port), "race");
  const { text, version } = await observer.join();
  await Promise.all(sessions.map((s) => s.whenAt(version, 20_000)));
  for (const [i, s] of sessions.entries()) {
    assert.equal(s.text, text, `editor ${i} diverged (seed ${seed})`);
    assert.equal(s.version, version);
  }
  assert.ok(version >= 3, `too few revisions: ${version}`);
  assert.deepEqual(errors, []);
});

test("an acknowledged operation survives kill -9 and a restart", async () => {
  const port = PORTS.kill;
  const dataDir = await makeDataDir();
  dirs.push(dataDir);
  let server = await start(port, { dataDir });
  const socket = await connect(port, {}, FAST_RECONNECT);
  const writer = new DocumentSession(socket, "durable", { clientId: "writer" });
  await writer.join();
  writer.insert(0, "acknowledged 😀 ");
  await writer.whenSynchronized();
  const acked = { text: writer.text, version: writer.version };

  // Sent but (most likely) not acknowledged when the server dies.
  writer.insert(writer.text.length, "in flight");
  await server.kill();
  server = await start(port, { dataDir });

  // A new client sees the acknowledged edit at least.
  const reader = new DocumentSession(await connect(port), "durable");
  const first = await reader.join();
  assert.ok(first.text.startsWith(acked.text), `lost an acknowledged edit: ${JSON.stringify(first.text)}`);
  assert.ok(first.version >= acked.version);

  // The writer re-joins by itself, catches up and resends what was in flight: applied once.
  await writer.whenSynchronized(20_000);
  await reader.whenAt(writer.version, 20_000);
  assert.equal(writer.text, "acknowledged 😀 in flight");
  assert.equal(reader.text, writer.text);

  // And it keeps editing on the restarted server.
  writer.insert(0, ">");
  await writer.whenSynchronized();
  await reader.whenAt(writer.version);
  assert.equal(reader.text, ">acknowledged 😀 in flight");
});

test("joining a missing document is refused when documents are not created on join", async () => {
  const port = PORTS.missing;
  await start(port, { env: { SHARDCAST_DOCUMENTS__CREATE_ON_JOIN: "false" } });
  const socket = await connect(port);
  const session = new DocumentSession(socket, "nowhere");
  await assert.rejects(session.join(), (err) => err.reason === "Document not found");
});

test("an edit over the limits is refused and the session takes the server's text again", async () => {
  const port = PORTS.limits;
  await start(port, { env: { SHARDCAST_DOCUMENTS__MAX_CHARS: "10" } });
  const errors = [];
  const states = [];
  const session = new DocumentSession(await connect(port), "small", {
    onError: (reason) => errors.push(reason),
    onState: (text, version, dropped) => states.push({ text, version, dropped }),
  });
  await session.join();
  session.insert(0, "hello");
  await session.whenSynchronized();
  session.insert(5, " world, too long");
  session.insert(0, ">"); // buffered behind the refused edit: dropped with it
  await session.when((s) => states.length === 2 && s.synchronized, 10_000, "the fresh state");
  assert.deepEqual(errors, ["document_too_large"]);
  assert.deepEqual(states[1], { text: "hello", version: 1, dropped: true });
  assert.equal(session.text, "hello");
  session.insert(5, "!");
  await session.whenSynchronized();
  assert.equal(session.version, 2);
});
