// Checks that a server speaks the Phoenix V2 subset of shardcast's echo:* channel: heartbeat,
// join, JSON and binary echo, JSON and binary broadcast to two subscribers, unmatched topic,
// clean close, and 404 on a wrong path. Works against shardcast and every peer here.
import { createRequire } from "node:module";
import assert from "node:assert/strict";
// `ws` comes from the repo's JS test suite (run `npm ci` in tests/js once).
const require = createRequire(new URL("../../tests/js/package.json", import.meta.url));
const WebSocket = require("ws");
// Usage: node perf/peers/check-protocol.mjs [ws://HOST:PORT]  (default ws://127.0.0.1:4100)
const BASE = process.argv[2] ?? "ws://127.0.0.1:4100";
const WS_URL = `${BASE}/socket/websocket?vsn=2.0.0`;

function client(name) {
  const ws = new WebSocket(WS_URL);
  ws.binaryType = "nodebuffer";
  const inbox = [];
  let waiters = [];
  ws.on("message", (data, isBinary) => {
    const m = isBinary ? { bin: Buffer.from(data) } : { text: data.toString() };
    inbox.push(m);
    const w = waiters; waiters = [];
    for (const f of w) f();
  });
  const next = (ms = 2000) => new Promise((res, rej) => {
    let t;
    const take = () => { if (inbox.length) { clearTimeout(t); res(inbox.shift()); return true; } return false; };
    if (take()) return;
    t = setTimeout(() => rej(new Error(`${name}: timeout waiting for message`)), ms);
    const again = () => { if (!take()) waiters.push(again); };
    waiters.push(again);
  });
  const open = new Promise((res, rej) => { ws.on("open", res); ws.on("error", rej); });
  return { ws, next, open, inbox, name };
}
const json = (m) => { assert.ok(m.text !== undefined, `expected text, got ${JSON.stringify(m)}`); return m.text; };

function binPush(jr, ref, topic, event, payload) {
  const parts = [jr, ref, topic, event].map((s) => Buffer.from(s));
  return Buffer.concat([Buffer.from([0, ...parts.map((p) => p.length)]), ...parts, payload]);
}

let passed = 0;
const check = (label, actual, expected) => { assert.equal(actual, expected, label); passed++; console.log("ok  ", label, "->", typeof actual === "string" ? actual : actual); };

const a = client("A"), b = client("B");
await Promise.all([a.open, b.open]);

// heartbeat
a.ws.send('[null,"1","phoenix","heartbeat",{}]');
check("heartbeat", json(await a.next()), '[null,"1","phoenix","phx_reply",{"response":{},"status":"ok"}]');

// join both
a.ws.send('["3","4","echo:room","phx_join",{"x":1}]');
check("join A", json(await a.next()), '["3","4","echo:room","phx_reply",{"response":{},"status":"ok"}]');
b.ws.send('["7","8","echo:room","phx_join",{}]');
check("join B", json(await b.next()), '["7","8","echo:room","phx_reply",{"response":{},"status":"ok"}]');

// JSON echo: payload relayed verbatim (whitespace/key order preserved)
a.ws.send('["3","5","echo:room","echo",{"b": 2, "a":[1,"x\\u00e9"],"n":1.50}]');
check("json echo", json(await a.next()), '["3","5","echo:room","phx_reply",{"response":{"b": 2, "a":[1,"x\\u00e9"],"n":1.50},"status":"ok"}]');

// JSON broadcast to two clients, sender included; then ok reply to the sender
a.ws.send('["3","6","echo:room","broadcast",{"hello":"world"}]');
check("json broadcast -> A", json(await a.next()), '[null,null,"echo:room","broadcast",{"hello":"world"}]');
check("json broadcast reply -> A", json(await a.next()), '["3","6","echo:room","phx_reply",{"response":{},"status":"ok"}]');
check("json broadcast -> B", json(await b.next()), '[null,null,"echo:room","broadcast",{"hello":"world"}]');

// binary echo
const payload = Buffer.from([0, 1, 2, 255, 254, 10]);
a.ws.send(binPush("3", "9", "echo:room", "echo", payload));
{
  const m = await a.next();
  assert.ok(m.bin, "binary echo reply must be binary");
  const expected = Buffer.concat([Buffer.from([1, 1, 1, 9, 2]), Buffer.from("39echo:roomok"), payload]);
  check("binary echo", m.bin.toString("hex"), expected.toString("hex"));
}

// binary broadcast (from B this time): binary broadcast frame to A and B, JSON ok reply to B
b.ws.send(binPush("7", "10", "echo:room", "broadcast", payload));
{
  const expected = Buffer.concat([Buffer.from([2, 9, 9]), Buffer.from("echo:roombroadcast"), payload]).toString("hex");
  const ma = await a.next();
  assert.ok(ma.bin, "binary broadcast must be binary");
  check("binary broadcast -> A", ma.bin.toString("hex"), expected);
  const mb = await b.next();
  assert.ok(mb.bin, "binary broadcast must be binary");
  check("binary broadcast -> B", mb.bin.toString("hex"), expected);
  check("binary broadcast reply -> B", json(await b.next()), '["7","10","echo:room","phx_reply",{"response":{},"status":"ok"}]');
}

// a third client that did not join gets nothing, and a push on an unjoined topic is unmatched
const c = client("C");
await c.open;
c.ws.send('["1","2","echo:room","echo",{}]');
check("unjoined push", json(await c.next()), '[null,"2","echo:room","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]');
a.ws.send('["3","11","echo:room","broadcast",{"k":1}]');
await a.next(); await a.next(); await b.next();
await new Promise((r) => setTimeout(r, 200));
check("non-subscriber received nothing", c.inbox.length, 0);

// heartbeat after everything, still works; nothing stray left in queues
b.ws.send('[null,"99","phoenix","heartbeat",{}]');
check("heartbeat B", json(await b.next()), '[null,"99","phoenix","phx_reply",{"response":{},"status":"ok"}]');
await new Promise((r) => setTimeout(r, 200));
check("no stray messages A", a.inbox.length, 0);
check("no stray messages B", b.inbox.length, 0);

// clean close handshake
const closed = new Promise((res) => a.ws.on("close", (code) => res(code)));
a.ws.close(1000);
check("close code", await closed, 1000);
b.ws.close(); c.ws.close();

// wrong path is refused
const bad = new WebSocket(WS_URL.replace(/\/socket\/websocket.*/, "/other"));
const badRes = await new Promise((res) => { bad.on("unexpected-response", (_req, resp) => res(resp.statusCode)); bad.on("error", () => res("error")); bad.on("open", () => res("open")); });
check("wrong path", badRes, 404);

console.log(`${passed} passed, 0 failed`);
process.exit(0);
