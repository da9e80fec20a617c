// Token auth with the official phoenix.js client: refused tokens at the handshake (HTTP 403,
// never a half-open socket), refused joins (access_denied / invalid_token), and tokens from
// `shardcast token` for the same data directory.
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { Socket } from "phoenix";
import WebSocket from "ws";
import {
  closeAll, connect, disconnect, handshakeStatus, join, makeDataDir, mintToken, removeDataDir, startServer, test,
  withTimeout,
} from "./helpers.mjs";

const PORT = 14115;
let server;
let dataDir;

before(async () => {
  dataDir = await makeDataDir();
  server = await startServer(PORT, { dataDir, env: { SHARDCAST_AUTH__ALLOW_ANONYMOUS: "false" } });
});
after(async () => {
  await closeAll();
  await server?.stop();
  if (dataDir) await removeDataDir(dataDir);
});

test("missing, malformed, forged and expired tokens get HTTP 403 at the handshake", async () => {
  const good = await mintToken(dataDir, { sub: "u1", name: "Ada" });
  const expired = await mintToken(dataDir, { sub: "u1", name: "Ada", ttl: 0 });
  const [header, claims] = good.split(".");
  const forged = `${header}.${claims}.${"A".repeat(43)}`;
  for (const query of ["", "&token=", "&token=nonsense", `&token=${forged}`, `&token=${expired}`]) {
    assert.equal(await handshakeStatus(PORT, `vsn=2.0.0${query}`), 403, `query ${query}`);
  }
  assert.equal(await handshakeStatus(PORT, `vsn=2.0.0&token=${good}`), 101);
});

test("phoenix.js with a refused token never opens the socket", async () => {
  const socket = new Socket(`ws://127.0.0.1:${PORT}/socket`, { transport: WebSocket, params: { token: "bad" } });
  let opened = false;
  socket.onOpen(() => (opened = true));
  const errored = new Promise((resolve) => socket.onError(resolve));
  socket.connect();
  await withTimeout(errored, 5_000, "socket error");
  await new Promise((resolve) => socket.disconnect(resolve));
  assert.equal(opened, false);
});

test("joins outside the token's rooms, or with a bad join token, are refused", async () => {
  const token = await mintToken(dataDir, { sub: "u1", name: "Ada", rooms: ["room:allowed", "collaboration:*"] });
  const socket = await connect(PORT, { token });
  const tryJoin = (topic, params = {}) =>
    join(socket.channel(topic, params)).then((response) => ({ ok: response }), (err) => ({ error: err.response }));

  assert.deepEqual(await tryJoin("room:allowed"), { ok: { user: { id: "u1", name: "Ada" } } });
  assert.deepEqual(await tryJoin("collaboration:doc"), { ok: { user: { id: "u1", name: "Ada" } } });
  assert.deepEqual(await tryJoin("room:secret"), { error: { reason: "access_denied" } });
  assert.deepEqual(await tryJoin("echo:x"), { error: { reason: "access_denied" } });
  assert.deepEqual(await tryJoin("room:other", { token: "garbage" }), { error: { reason: "invalid_token" } });
  const expired = await mintToken(dataDir, { sub: "u1", name: "Ada", ttl: 0 });
  assert.deepEqual(await tryJoin("room:other2", { token: expired }), { error: { reason: "invalid_token" } });
  const someoneElse = await mintToken(dataDir, { sub: "u2", name: "Bo" });
  assert.deepEqual(await tryJoin("room:other3", { token: someoneElse }), { error: { reason: "access_denied" } });
  // A join token of the same user with wider rooms grants the join.
  const wider = await mintToken(dataDir, { sub: "u1", name: "Ada", rooms: ["room:*"] });
  assert.deepEqual(await tryJoin("room:secret2", { token: wider }), { ok: { user: { id: "u1", name: "Ada" } } });
  await disconnect(socket); // phoenix.js would keep retrying the refused joins
});
