// Pure tests of clients/js/shardcast-ot.mjs (no server): TextOperation against ot.js semantics
// (apply, compose, transform/TP1, invert, JSON), the OTClient state machine, and a session
// simulator in which 2-6 clients edit through a model of the server with random delays,
// acknowledgements overtaken by broadcasts, and reconnects whose old messages arrive late.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  AWAITING_CONFIRM,
  AWAITING_WITH_BUFFER,
  OTClient,
  SYNCHRONIZED,
  TextOperation,
} from "../../clients/js/shardcast-ot.mjs";

// --- Random generation (seeded) --------------------------------------------------------------

function rng(seed) {
  let s = BigInt(seed) | 1n;
  return {
    next() {
      s ^= (s << 13n) & 0xffffffffffffffffn;
      s ^= s >> 7n;
      s ^= (s << 17n) & 0xffffffffffffffffn;
      return Number(s & 0xffffffffn);
    },
    below(n) {
      return n <= 0 ? 0 : this.next() % n;
    },
  };
}

const ALPHABET = ["a", "b", "e", "\u0301", "é", "😀", "👍", "\n"];

function randomText(r, max = 4) {
  let s = "";
  for (let i = 0, n = 1 + r.below(max); i < n; i++) s += ALPHABET[r.below(ALPHABET.length)];
  return s;
}

/** Code-unit offsets of code-point boundaries of `s` (an editor never splits a surrogate pair). */
function boundaries(s) {
  const out = [0];
  let i = 0;
  for (const ch of s) {
    i += ch.length;
    out.push(i);
  }
  return out;
}

/** A random edit of `s`: inserts, deletes and retains at code-point boundaries. */
function randomOp(r, s) {
  const b = boundaries(s);
  const op = new TextOperation();
  let at = 0; // index into b
  const last = b.length - 1;
  for (let steps = r.below(4); steps >= 0 && at <= last; steps--) {
    const kind = r.below(3);
    const n = 1 + r.below(3);
    const to = Math.min(last, at + n);
    if (kind === 0) op.retain(b[to] - b[at]), (at = to);
    else if (kind === 1) op.delete(b[to] - b[at]), (at = to);
    else op.insert(randomText(r));
  }
  return op.retain(s.length - b[at]);
}

// --- TextOperation -----------------------------------------------------------------------------

test("builds normalized operations like ot.js", () => {
  const op = new TextOperation().retain(2).retain(1).delete(1).insert("x").delete("ab").insert("y");
  assert.deepEqual(op.toJSON(), [3, "xy", -3]);
  assert.equal(op.baseLength, 6);
  assert.equal(op.targetLength, 5);
  assert.ok(new TextOperation().retain(3).isNoop());
  assert.ok(TextOperation.fromJSON([3, "xy", -3]).equals(op));
  assert.throws(() => TextOperation.fromJSON([1, 0]), /unknown operation component/);
  assert.equal(op.apply("abcdef"), "abcxy");
  assert.throws(() => op.apply("abc"), /base length/);
});

test("the issue's examples converge", () => {
  const converge = (s, a, b) => {
    const [a2, b2] = TextOperation.transform(a, b);
    const left = b2.apply(a.apply(s));
    assert.equal(left, a2.apply(b.apply(s)));
    return left;
  };
  // Overlapping deletes subtract.
  assert.equal(converge("abcdef", TextOperation.deleteAt(6, 1, 2), TextOperation.deleteAt(6, 2, 2)), "aef");
  // An insert inside a deleted range survives.
  assert.equal(converge("abcdef", TextOperation.deleteAt(6, 1, 3), TextOperation.insertAt(6, 2, "X")), "aXef");
  assert.equal(converge("abcdef", TextOperation.insertAt(6, 2, "X"), TextOperation.deleteAt(6, 1, 3)), "aXef");
  // Same-position inserts: the first argument goes left.
  assert.equal(converge("xy", TextOperation.insertAt(2, 1, "A"), TextOperation.insertAt(2, 1, "B")), "xABy");
});

test("TP1, compose and invert hold on random operations over emoji and combining marks", () => {
  const r = rng(42);
  for (let i = 0; i < 3000; i++) {
    const s = randomText(r, 10);
    const a = randomOp(r, s);
    const b = randomOp(r, s);
    const [a2, b2] = TextOperation.transform(a, b);
    assert.equal(b2.apply(a.apply(s)), a2.apply(b.apply(s)), `TP1 on ${JSON.stringify(s)}: ${a} / ${b}`);
    const c = randomOp(r, a.apply(s));
    assert.equal(a.compose(c).apply(s), c.apply(a.apply(s)));
    assert.equal(a.invert(s).apply(a.apply(s)), s);
    assert.ok(TextOperation.fromJSON(JSON.parse(JSON.stringify(a))).equals(a));
  }
});

// --- OTClient ------------------------------------------------------------------------------------

test("the client state machine buffers, rebases and releases", () => {
  const sent = [];
  const applied = [];
  const c = new OTClient({ clientId: "me", text: "abc", version: 0, send: (o) => sent.push(o), apply: (op) => applied.push(op) });
  c.applyLocal(TextOperation.insertAt(3, 3, "1"));
  assert.equal(c.state, AWAITING_CONFIRM);
  assert.deepEqual(sent.map((o) => [o.op.toJSON(), o.baseVersion, o.seq]), [[[3, "1"], 0, 1]]);
  c.applyLocal(TextOperation.insertAt(4, 4, "2"));
  assert.equal(c.state, AWAITING_WITH_BUFFER);
  assert.equal(sent.length, 1);
  // Another client's insert at 0 became version 1; ours is version 2. The ack overtakes it.
  c.serverAck({ version: 2, seq: 1 });
  assert.equal(c.version, 0, "the ack waits for version 1");
  assert.equal(c.waiting, 1);
  c.serverOperation({ op: TextOperation.insertAt(3, 0, "X"), version: 1, clientId: "other", seq: 1 });
  assert.equal(c.text, "Xabc12");
  assert.deepEqual(applied.map((op) => op.toJSON()), [["X", 5]]);
  // The ack released the buffer, rebased and based on version 2.
  assert.equal(c.version, 2);
  assert.equal(c.state, AWAITING_CONFIRM);
  assert.deepEqual([sent[1].op.toJSON(), sent[1].baseVersion, sent[1].seq], [[5, "2"], 2, 2]);
  // Old and duplicate deliveries are ignored.
  c.serverOperation({ op: TextOperation.insertAt(3, 0, "X"), version: 1, clientId: "other", seq: 1 });
  c.serverAck({ version: 3, seq: 2 });
  assert.equal(c.state, SYNCHRONIZED);
  assert.equal(c.text, "Xabc12");
});

test("a catch-up acknowledges the client's own operation and returns what to resend", () => {
  const sent = [];
  const c = new OTClient({ clientId: "me", text: "", version: 0, send: (o) => sent.push(o) });
  c.applyLocal(TextOperation.insertAt(0, 0, "a"));
  c.applyLocal(TextOperation.insertAt(1, 1, "b"));
  // Connection lost before the ack; the server had applied "x" then our "a".
  const resend = c.catchUp([
    { op: TextOperation.insertAt(0, 0, "x"), version: 1, clientId: "other", seq: 9 },
    // Submitted after "x" at the same position, so rebased to its left.
    { op: TextOperation.fromJSON(["a", 1]), version: 2, clientId: "me", seq: 1 },
  ]);
  assert.equal(c.text, "abx");
  assert.deepEqual([resend.op.toJSON(), resend.baseVersion, resend.seq], [[1, "b", 1], 2, 2]);
  // A fresh state drops what cannot be rebased.
  assert.equal(c.reset("zzz", 7), true);
  assert.equal(c.state, SYNCHRONIZED);
  assert.equal(c.text, "zzz");
});

// --- Session simulator --------------------------------------------------------------------------

/** The server model: rebases submissions over the history and remembers each client's last seq. */
class ModelServer {
  text = "";
  history = [];
  last = new Map(); // clientId -> revision

  get version() {
    return this.history.length;
  }

  submit({ op, baseVersion, clientId, seq }) {
    const prev = this.last.get(clientId);
    if (prev && prev.seq === seq) return { duplicate: true, rev: prev };
    // A late message of a dead connection, older than what its client sent since (stale_seq).
    if (prev && seq < prev.seq) return { stale: true };
    let rebased = op;
    for (const rev of this.history.slice(baseVersion)) rebased = TextOperation.transform(rebased, rev.op)[0];
    this.text = rebased.apply(this.text);
    const rev = { op: rebased, version: this.version + 1, clientId, seq };
    this.history.push(rev);
    this.last.set(clientId, rev);
    return { duplicate: false, rev };
  }
}

const stats = { reconnects: 0, resends: 0, duplicates: 0 };

function simulate(seed) {
  const r = rng(seed);
  const server = new ModelServer();
  const n = 2 + r.below(5);
  const peers = [];
  const zombies = []; // messages of dead connections, still on their way to the server
  for (let i = 0; i < n; i++) {
    const peer = { id: `c${i}`, up: [], acks: [], casts: [], synced: true, epoch: 0 };
    peer.client = new OTClient({
      clientId: peer.id,
      send: (out) => peer.synced && peer.up.push({ kind: "submit", ...out, clientId: peer.id, epoch: peer.epoch }),
    });
    peers.push(peer);
  }
  const deliverUp = (peer, msg) => {
    if (msg.kind === "join") {
      if (peer.epoch !== msg.epoch) return;
      peer.casts.push({ kind: "catchup", revisions: server.history.slice(msg.since) });
      return;
    }
    const { duplicate, stale, rev } = server.submit(msg);
    if (duplicate) stats.duplicates++;
    if (stale) {
      assert.notEqual(msg.epoch, peer.epoch, "a live connection's seq went backwards");
      return;
    }
    if (msg.epoch === undefined || msg.epoch === peer.epoch) peer.acks.push({ version: rev.version, seq: msg.seq });
    if (!duplicate) for (const other of peers) if (other !== peer) other.casts.push({ kind: "op", ...rev });
  };
  const receive = (peer, msg) => {
    if (msg.kind !== "catchup") return peer.client.serverOperation(msg);
    peer.synced = true;
    const resend = peer.client.catchUp(msg.revisions);
    if (resend) {
      stats.resends++;
      peer.up.push({ kind: "submit", ...resend, clientId: peer.id, epoch: peer.epoch });
    }
  };
  let edits = 0;
  for (let step = 0; step < 400; step++) {
    const peer = peers[r.below(n)];
    const roll = r.below(100);
    if (roll < 30) {
      if (edits < 60) {
        peer.client.applyLocal(randomOp(r, peer.client.text));
        edits++;
      }
    } else if (roll < 55) {
      if (peer.up.length) deliverUp(peer, peer.up.shift());
    } else if (roll < 70) {
      if (peer.acks.length) peer.client.serverAck(peer.acks.shift());
    } else if (roll < 92) {
      if (peer.casts.length) receive(peer, peer.casts.shift());
    } else if (roll < 95) {
      if (peer.synced) {
        // Reconnect: what the old connection sent may still arrive; what it would receive is lost.
        zombies.push(...peer.up.filter((m) => m.kind === "submit").map((m) => [peer, m]));
        peer.epoch++;
        peer.synced = false;
        peer.up = [{ kind: "join", since: peer.client.version, epoch: peer.epoch }];
        peer.acks = [];
        peer.casts = [];
        stats.reconnects++;
      }
    } else if (zombies.length) {
      const [owner, msg] = zombies.splice(r.below(zombies.length), 1)[0];
      deliverUp(owner, msg);
    }
  }
  // Deliver everything left.
  for (;;) {
    let moved = false;
    for (const [owner, msg] of zombies.splice(0)) (moved = true), deliverUp(owner, msg);
    for (const peer of peers) {
      while (peer.up.length) (moved = true), deliverUp(peer, peer.up.shift());
      while (peer.acks.length) (moved = true), peer.client.serverAck(peer.acks.shift());
      while (peer.casts.length) (moved = true), receive(peer, peer.casts.shift());
    }
    if (!moved) break;
  }
  for (const peer of peers) {
    assert.equal(peer.client.state, SYNCHRONIZED, `seed ${seed}: ${peer.id} still waiting`);
    assert.equal(peer.client.version, server.version, `seed ${seed}: ${peer.id} version`);
    assert.equal(peer.client.text, server.text, `seed ${seed}: ${peer.id} text`);
  }
  return server.version;
}

test("simulated sessions with reordering and reconnects converge to the server's text", () => {
  let versions = 0;
  for (let seed = 1; seed <= 1500; seed++) versions += simulate(seed);
  assert.ok(versions > 1500 * 10, `sessions were too short (${versions} revisions)`);
  // The paths the simulation is for were taken often.
  assert.ok(stats.reconnects > 1000 && stats.resends > 200 && stats.duplicates > 50, JSON.stringify(stats));
});
