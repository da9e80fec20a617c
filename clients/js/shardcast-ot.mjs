// shardcast-ot: the JavaScript client for shardcast's `document:<id>` channels.
//
// - TextOperation: ot.js-compatible compound operations (retain n, insert "s", delete -n) with
//   apply, compose, transform and invert. Lengths count UTF-16 code units, as JavaScript strings
//   and browser editors do; the session joins with {offsets: "utf16"} so the server converts at
//   its edge.
// - OTClient: the pure client state machine (Synchronized / AwaitingConfirm / AwaitingWithBuffer):
//   at most one operation in flight, local edits made meanwhile composed into one buffer, and
//   incoming operations rebased over both. Server messages are applied in version order whatever
//   order they arrive in (an acknowledgement and the broadcasts of other clients travel different
//   paths through the server).
// - DocumentSession: an OTClient over a phoenix.js channel, with the re-join protocol: re-join
//   with the last known version, take the missed revisions (its own among them is its
//   acknowledgement), then resend the operation in flight with the same client_id and seq (the
//   server never applies it twice); if the history no longer reaches back, take the server's text.
//
// No dependencies: pass a phoenix.js Socket to DocumentSession.

// ---------------------------------------------------------------------------------------------
// TextOperation (ot.js)
// ---------------------------------------------------------------------------------------------

const isRetain = (c) => typeof c === "number" && c > 0;
const isInsert = (c) => typeof c === "string";
const isDelete = (c) => typeof c === "number" && c < 0;

export class TextOperation {
  constructor() {
    /** Components: positive integers retain, strings insert, negative integers delete. */
    this.ops = [];
    /** Length of the string this operation applies to. */
    this.baseLength = 0;
    /** Length of the string it produces. */
    this.targetLength = 0;
  }

  static isRetain = isRetain;
  static isInsert = isInsert;
  static isDelete = isDelete;

  /** Skips `n` characters. */
  retain(n) {
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
      throw new TypeError("retain expects a non-negative integer");
    }
    if (n === 0) return this;
    this.baseLength += n;
    this.targetLength += n;
    if (isRetain(this.ops[this.ops.length - 1])) {
      this.ops[this.ops.length - 1] += n;
    } else {
      this.ops.push(n);
    }
    return this;
  }

  /** Inserts `str` at the current position. */
  insert(str) {
    if (typeof str !== "string") throw new TypeError("insert expects a string");
    if (str === "") return this;
    this.targetLength += str.length;
    const ops = this.ops;
    if (isInsert(ops[ops.length - 1])) {
      ops[ops.length - 1] += str;
    } else if (isDelete(ops[ops.length - 1])) {
      // Insert before delete: both orders do the same, one normal form compares equal.
      if (isInsert(ops[ops.length - 2])) {
        ops[ops.length - 2] += str;
      } else {
        ops[ops.length] = ops[ops.length - 1];
        ops[ops.length - 2] = str;
      }
    } else {
      ops.push(str);
    }
    return this;
  }

  /** Deletes `n` characters (or as many as the string `n` has). */
  delete(n) {
    if (typeof n === "string") n = n.length;
    if (typeof n !== "number" || !Number.isInteger(n)) {
      throw new TypeError("delete expects an integer or a string");
    }
    if (n === 0) return this;
    if (n > 0) n = -n;
    this.baseLength -= n;
    if (isDelete(this.ops[this.ops.length - 1])) {
      this.ops[this.ops.length - 1] += n;
    } else {
      this.ops.push(n);
    }
    return this;
  }

  /** True if applying it changes nothing. */
  isNoop() {
    return this.ops.length === 0 || (this.ops.length === 1 && isRetain(this.ops[0]));
  }

  equals(other) {
    if (this.baseLength !== other.baseLength || this.targetLength !== other.targetLength) return false;
    if (this.ops.length !== other.ops.length) return false;
    return this.ops.every((c, i) => c === other.ops[i]);
  }

  toString() {
    return this.ops
      .map((c) => (isRetain(c) ? `retain ${c}` : isInsert(c) ? `insert '${c}'` : `delete ${-c}`))
      .join(", ");
  }

  /** The ot.js wire form: the component array. */
  toJSON() {
    return this.ops;
  }

  static fromJSON(ops) {
    if (!Array.isArray(ops)) throw new TypeError("an operation is an array of components");
    const o = new TextOperation();
    for (const c of ops) {
      if (isRetain(c)) o.retain(c);
      else if (isInsert(c)) o.insert(c);
      else if (isDelete(c)) o.delete(c);
      else throw new TypeError(`unknown operation component: ${JSON.stringify(c)}`);
    }
    return o;
  }

  /** Insert `text` at `position` of a document of `length`. */
  static insertAt(length, position, text) {
    if (position < 0 || position > length) throw new RangeError(`position ${position} outside 0..${length}`);
    return new TextOperation().retain(position).insert(text).retain(length - position);
  }

  /** Delete `count` characters at `position` of a document of `length`. */
  static deleteAt(length, position, count) {
    if (position < 0 || count < 0 || position + count > length) {
      throw new RangeError(`range ${position}+${count} outside 0..${length}`);
    }
    return new TextOperation().retain(position).delete(count).retain(length - position - count);
  }

  /** Applies the operation to `str`. */
  apply(str) {
    if (str.length !== this.baseLength) {
      throw new Error(`the operation's base length (${this.baseLength}) is not the string's length (${str.length})`);
    }
    const out = [];
    let index = 0;
    for (const c of this.ops) {
      if (isRetain(c)) {
        out.push(str.slice(index, index + c));
        index += c;
      } else if (isInsert(c)) {
        out.push(c);
      } else {
        index -= c;
      }
    }
    return out.join("");
  }

  /** The operation that undoes this one; `str` is the string before this one applies. */
  invert(str) {
    const inverse = new TextOperation();
    let index = 0;
    for (const c of this.ops) {
      if (isRetain(c)) {
        inverse.retain(c);
        index += c;
      } else if (isInsert(c)) {
        inverse.delete(c.length);
      } else {
        inverse.insert(str.slice(index, index - c));
        index -= c;
      }
    }
    return inverse;
  }

  /** One operation with the effect of this one followed by `operation2`. */
  compose(operation2) {
    const operation1 = this;
    if (operation1.targetLength !== operation2.baseLength) {
      throw new Error("the base length of the second operation has to be the target length of the first");
    }
    const out = new TextOperation();
    const ops1 = operation1.ops;
    const ops2 = operation2.ops;
    let i1 = 0;
    let i2 = 0;
    let op1 = ops1[i1++];
    let op2 = ops2[i2++];
    for (;;) {
      if (op1 === undefined && op2 === undefined) break;
      if (isDelete(op1)) {
        out.delete(op1);
        op1 = ops1[i1++];
        continue;
      }
      if (isInsert(op2)) {
        out.insert(op2);
        op2 = ops2[i2++];
        continue;
      }
      if (op1 === undefined || op2 === undefined) {
        throw new Error("cannot compose: the operations do not fit");
      }
      if (isRetain(op1) && isRetain(op2)) {
        if (op1 > op2) {
          out.retain(op2);
          op1 -= op2;
          op2 = ops2[i2++];
        } else if (op1 === op2) {
          out.retain(op1);
          op1 = ops1[i1++];
          op2 = ops2[i2++];
        } else {
          out.retain(op1);
          op2 -= op1;
          op1 = ops1[i1++];
        }
      } else if (isInsert(op1) && isDelete(op2)) {
        if (op1.length > -op2) {
          op1 = op1.slice(-op2);
          op2 = ops2[i2++];
        } else if (op1.length === -op2) {
          op1 = ops1[i1++];
          op2 = ops2[i2++];
        } else {
          op2 += op1.length;
          op1 = ops1[i1++];
        }
      } else if (isInsert(op1) && isRetain(op2)) {
        if (op1.length > op2) {
          out.insert(op1.slice(0, op2));
          op1 = op1.slice(op2);
          op2 = ops2[i2++];
        } else if (op1.length === op2) {
          out.insert(op1);
          op1 = ops1[i1++];
          op2 = ops2[i2++];
        } else {
          out.insert(op1);
          op2 -= op1.length;
          op1 = ops1[i1++];
        }
      } else if (isRetain(op1) && isDelete(op2)) {
        if (op1 > -op2) {
          out.delete(op2);
          op1 += op2;
          op2 = ops2[i2++];
        } else if (op1 === -op2) {
          out.delete(op2);
          op1 = ops1[i1++];
          op2 = ops2[i2++];
        } else {
          out.delete(op1);
          op2 += op1;
          op1 = ops1[i1++];
        }
      } else {
        throw new Error("cannot compose: unexpected components");
      }
    }
    return out;
  }

  /**
   * Transforms two operations on the same document into [a', b'] with
   * apply(apply(s, a), b') === apply(apply(s, b), a') (TP1). When both insert at one position,
   * `operation1`'s text goes left; the server passes the submitted operation first, a client
   * its pending one, which agrees because the pending operation reaches the server after
   * everything the client has received. Overlapping deletes subtract; text inserted inside a
   * range the other deletes survives.
   */
  static transform(operation1, operation2) {
    if (operation1.baseLength !== operation2.baseLength) {
      throw new Error("both operations have to have the same base length");
    }
    const operation1prime = new TextOperation();
    const operation2prime = new TextOperation();
    const ops1 = operation1.ops;
    const ops2 = operation2.ops;
    let i1 = 0;
    let i2 = 0;
    let op1 = ops1[i1++];
    let op2 = ops2[i2++];
    for (;;) {
      if (op1 === undefined && op2 === undefined) break;
      if (isInsert(op1)) {
        operation1prime.insert(op1);
        operation2prime.retain(op1.length);
        op1 = ops1[i1++];
        continue;
      }
      if (isInsert(op2)) {
        operation1prime.retain(op2.length);
        operation2prime.insert(op2);
        op2 = ops2[i2++];
        continue;
      }
      if (op1 === undefined || op2 === undefined) {
        throw new Error("cannot transform: the operations do not fit");
      }
      let minl;
      if (isRetain(op1) && isRetain(op2)) {
        if (op1 > op2) {
          minl = op2;
          op1 -= op2;
          op2 = ops2[i2++];
        } else if (op1 === op2) {
          minl = op2;
          op1 = ops1[i1++];
          op2 = ops2[i2++];
        } else {
          minl = op1;
          op2 -= op1;
          op1 = ops1[i1++];
        }
        operation1prime.retain(minl);
        operation2prime.retain(minl);
      } else if (isDelete(op1) && isDelete(op2)) {
        // Both deleted these characters: neither deletes them again.
        if (-op1 > -op2) {
          op1 -= op2;
          op2 = ops2[i2++];
        } else if (op1 === op2) {
          op1 = ops1[i1++];
          op2 = ops2[i2++];
        } else {
          op2 -= op1;
          op1 = ops1[i1++];
        }
      } else if (isDelete(op1) && isRetain(op2)) {
        if (-op1 > op2) {
          minl = op2;
          op1 += op2;
          op2 = ops2[i2++];
        } else if (-op1 === op2) {
          minl = op2;
          op1 = ops1[i1++];
          op2 = ops2[i2++];
        } else {
          minl = -op1;
          op2 += op1;
          op1 = ops1[i1++];
        }
        operation1prime.delete(minl);
      } else if (isRetain(op1) && isDelete(op2)) {
        if (op1 > -op2) {
          minl = -op2;
          op1 += op2;
          op2 = ops2[i2++];
        } else if (op1 === -op2) {
          minl = op1;
          op1 = ops1[i1++];
          op2 = ops2[i2++];
        } else {
          minl = op1;
          op2 += op1;
          op1 = ops1[i1++];
        }
        operation2prime.delete(minl);
      } else {
        throw new Error("cannot transform: unexpected components");
      }
    }
    return [operation1prime, operation2prime];
  }
}

// ---------------------------------------------------------------------------------------------
// OTClient: the pure state machine
// ---------------------------------------------------------------------------------------------

export const SYNCHRONIZED = "synchronized";
export const AWAITING_CONFIRM = "awaitingConfirm";
export const AWAITING_WITH_BUFFER = "awaitingWithBuffer";

/**
 * One client's copy of a document. It calls `send(outgoing)` with `{op, baseVersion, seq}` when
 * an operation is to be sent, and `apply(op)` with every remote operation (already rebased over
 * local edits) so an editor can apply it.
 */
export class OTClient {
  #incoming = new Map(); // version -> {kind: "ack", seq} | {kind: "op", op, clientId, seq, userId}

  constructor({ clientId, text = "", version = 0, send = () => {}, apply = () => {} } = {}) {
    if (!clientId) throw new TypeError("an OTClient needs a clientId");
    this.clientId = clientId;
    this.text = text;
    /** The last server version incorporated. */
    this.version = version;
    this.state = SYNCHRONIZED;
    /** The operation in flight: {op, baseVersion, seq}, rebased to `version`. */
    this.outstanding = null;
    /** Local edits made while `outstanding` is in flight, composed into one. */
    this.buffer = null;
    this.nextSeq = 1;
    this.send = send;
    this.apply = apply;
  }

  /** A local edit (already shown in the editor). */
  applyLocal(op) {
    this.text = op.apply(this.text);
    switch (this.state) {
      case SYNCHRONIZED:
        this.outstanding = { op, baseVersion: this.version, seq: this.nextSeq++ };
        this.state = AWAITING_CONFIRM;
        this.send(this.outstanding);
        break;
      case AWAITING_CONFIRM:
        this.buffer = op;
        this.state = AWAITING_WITH_BUFFER;
        break;
      default:
        this.buffer = this.buffer.compose(op);
    }
  }

  /** The server acknowledged `seq` as `version`. */
  serverAck({ version, seq }) {
    this.#enqueue(version, { kind: "ack", seq });
  }

  /** Another client's operation `{op, version, clientId?, seq?, userId?}`. */
  serverOperation(rev) {
    this.#enqueue(rev.version, { kind: "op", ...rev });
  }

  /**
   * After a re-join that the history could serve: the revisions missed. Returns the operation in
   * flight to resend (same seq), or null.
   */
  catchUp(revisions) {
    for (const rev of revisions) this.serverOperation(rev);
    return this.outstanding;
  }

  /**
   * After a join served with the whole document: takes it. Unacknowledged local edits cannot be
   * rebased and are dropped (one that did reach the server arrives as an operation like anyone
   * else's). Returns true if edits were dropped.
   */
  reset(text, version) {
    const dropped = this.state !== SYNCHRONIZED;
    this.text = text;
    this.version = version;
    this.state = SYNCHRONIZED;
    this.outstanding = null;
    this.buffer = null;
    // Acknowledgements waiting here were for dropped operations; their revisions are in the
    // text, or reach this client as operations.
    for (const [v, event] of [...this.#incoming]) {
      if (v <= version || event.kind === "ack") this.#incoming.delete(v);
    }
    this.#drain();
    return dropped;
  }

  /** Server messages waiting for an earlier version. */
  get waiting() {
    return this.#incoming.size;
  }

  #enqueue(version, event) {
    if (!Number.isInteger(version)) throw new TypeError(`bad version ${version}`);
    if (version <= this.version || this.#incoming.has(version)) return;
    this.#incoming.set(version, event);
    this.#drain();
  }

  #drain() {
    for (;;) {
      const next = this.#incoming.get(this.version + 1);
      if (next === undefined) return;
      this.#incoming.delete(this.version + 1);
      const own = this.outstanding && (next.kind === "ack" || next.clientId === this.clientId) && next.seq === this.outstanding.seq;
      if (own) {
        this.#acknowledged();
      } else if (next.kind === "op") {
        this.#remote(next.op);
      } else {
        // An acknowledgement of something no longer in flight cannot hold a version we lack.
        throw new Error(`acknowledgement of seq ${next.seq} at version ${this.version + 1} while ${this.outstanding ? `seq ${this.outstanding.seq}` : "nothing"} is in flight`);
      }
    }
  }

  #acknowledged() {
    this.version += 1;
    if (this.state === AWAITING_WITH_BUFFER) {
      this.outstanding = { op: this.buffer, baseVersion: this.version, seq: this.nextSeq++ };
      this.buffer = null;
      this.state = AWAITING_CONFIRM;
      this.send(this.outstanding);
    } else {
      this.outstanding = null;
      this.state = SYNCHRONIZED;
    }
  }

  #remote(op) {
    let incoming = op;
    if (this.state !== SYNCHRONIZED) {
      const [pending, rebased] = TextOperation.transform(this.outstanding.op, incoming);
      this.outstanding = { ...this.outstanding, op: pending, baseVersion: this.version + 1 };
      incoming = rebased;
      if (this.state === AWAITING_WITH_BUFFER) {
        const [buffered, rebased2] = TextOperation.transform(this.buffer, incoming);
        this.buffer = buffered;
        incoming = rebased2;
      }
    }
    this.text = incoming.apply(this.text);
    this.version += 1;
    this.apply(incoming);
  }
}

// ---------------------------------------------------------------------------------------------
// DocumentSession: an OTClient over a phoenix.js channel
// ---------------------------------------------------------------------------------------------

/** Errors after which the session re-joins with its version and resends what is in flight. */
const RETRY = new Set(["resync", "storage_error", "overloaded"]);

function randomId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * A document open on a phoenix.js `socket`. Callbacks (all optional):
 * - onChange(op, text): a remote operation was applied (op in UTF-16 offsets, ot.js form);
 * - onState(text, version, droppedEdits): the whole document was (re)loaded;
 * - onError(reason, response): an operation or the join was refused for good.
 */
export class DocumentSession {
  #socket;
  #params;
  #channel = null;
  #synced = false; // the current channel has its state or catch-up
  #epoch = 0; // bumped whenever the channel changes, to ignore answers meant for an old one
  #fresh = false; // the next join asks for the whole document
  #waiters = [];
  #joined = null; // {resolve, reject} of join()
  #retryTimer = null;
  #closed = false;
  #pushes = new Set(); // operation pushes waiting for their reply on the current connection

  constructor(socket, documentId, { clientId = randomId(), params = {}, onChange, onState, onError, pushTimeout = 10_000 } = {}) {
    this.#socket = socket;
    this.#params = params;
    this.topic = `document:${documentId}`;
    this.clientId = clientId;
    this.pushTimeout = pushTimeout;
    this.onChange = onChange ?? (() => {});
    this.onState = onState ?? (() => {});
    this.onError = onError ?? (() => {});
    this.client = null;
  }

  get text() {
    return this.client?.text ?? "";
  }

  get version() {
    return this.client?.version ?? null;
  }

  get state() {
    return this.client?.state ?? null;
  }

  /** True when joined, with nothing in flight or buffered. */
  get synchronized() {
    return this.#synced && this.client?.state === SYNCHRONIZED;
  }

  /** Joins; resolves with {text, version} once the document arrived. */
  join() {
    if (this.#channel) throw new Error("join can only be called once");
    return new Promise((resolve, reject) => {
      this.#joined = { resolve, reject };
      this.#open();
    });
  }

  /** Applies a local edit (a TextOperation on the current text, UTF-16 offsets). */
  edit(op) {
    if (!this.client) throw new Error("edit before the document arrived");
    this.client.applyLocal(op);
    this.#notify();
  }

  insert(position, text) {
    this.edit(TextOperation.insertAt(this.text.length, position, text));
  }

  delete(position, count) {
    this.edit(TextOperation.deleteAt(this.text.length, position, count));
  }

  /** Resolves once `predicate(session)` holds (checked after every change). */
  when(predicate, timeout = 10_000, what = "document condition") {
    return new Promise((resolve, reject) => {
      const waiter = { predicate, resolve, reject };
      waiter.timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${timeout} ms waiting for ${what} (version ${this.version}, state ${this.state}, synced ${this.#synced})`));
      }, timeout);
      this.#waiters.push(waiter);
      this.#notify();
    });
  }

  /** Resolves when every local edit is acknowledged. */
  whenSynchronized(timeout) {
    return this.when((s) => s.synchronized, timeout, "synchronization");
  }

  /** Resolves when the session has incorporated `version` and has nothing in flight. */
  whenAt(version, timeout) {
    return this.when((s) => s.synchronized && s.version >= version, timeout, `version ${version}`);
  }

  /** Leaves the channel. */
  leave() {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#epoch++;
    this.#dropPushes();
    const channel = this.#channel;
    this.#channel = null;
    this.#synced = false;
    return new Promise((resolve) => {
      if (!channel) return resolve();
      channel.leave().receive("ok", resolve).receive("timeout", resolve);
    });
  }

  #joinParams() {
    const params = { ...this.#params, offsets: "utf16" };
    if (this.client && !this.#fresh) params.version = this.client.version;
    return params;
  }

  #open() {
    const epoch = ++this.#epoch;
    const channel = this.#socket.channel(this.topic, () => this.#joinParams());
    this.#channel = channel;
    this.#synced = false;
    const mine = (fn) => (payload) => {
      if (epoch === this.#epoch) this.#guard(fn, payload);
    };
    channel.on("document_state", mine((p) => this.#state(p)));
    channel.on("document_catchup", mine((p) => this.#catchUp(p)));
    channel.on("operation", mine((p) => this.#operation(p)));
    channel.on("resync", mine(() => this.#reopen()));
    channel.on("document_error", mine((p) => {
      // The join was accepted but the document cannot be served now: retry unless it is gone.
      if (p.reason === "Document not found") this.#fail(p.reason, p);
      else this.#reopen({ delay: 500 + Math.random() * 1500 });
    }));
    channel.onError(mine(() => {
      // phoenix.js re-joins by itself (the join params carry the version). Replies to what was
      // sent on the lost connection never come: the catch-up settles those operations.
      this.#synced = false;
      this.#dropPushes();
    }));
    channel
      .join()
      .receive("error", mine((resp) => this.#fail(resp?.reason ?? "join_refused", resp)))
      .receive("timeout", mine(() => {}));
  }

  /** Re-joins on a new channel (leaving the current one), keeping or dropping the version. */
  #reopen({ fresh = false, delay = 0 } = {}) {
    if (this.#closed) return;
    this.#fresh = this.#fresh || fresh;
    this.#epoch++;
    this.#synced = false;
    this.#dropPushes();
    const old = this.#channel;
    this.#channel = null;
    old?.leave();
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      if (!this.#closed && !this.#channel) this.#open();
    }, delay);
  }

  #ensureClient(text, version) {
    if (this.client) return false;
    this.client = new OTClient({
      clientId: this.clientId,
      text,
      version,
      send: (out) => this.#send(out),
      apply: (op) => this.onChange(op, this.client.text),
    });
    return true;
  }

  #state({ content, version }) {
    const created = this.#ensureClient(content, version);
    const dropped = created ? false : this.client.reset(content, version);
    this.#fresh = false;
    this.#synced = true;
    this.onState(content, version, dropped);
    this.#resolveJoin();
    this.#notify();
  }

  #catchUp({ operations }) {
    if (!this.client) return this.#reopen({ fresh: true });
    // Not synced while catching up: an acknowledgement found here that releases the buffer
    // leaves it in flight, sent once below.
    const resend = this.client.catchUp(operations.map(toRevision));
    this.#synced = true;
    if (resend) this.#send(resend);
    this.#resolveJoin();
    this.#notify();
  }

  #operation(p) {
    if (!this.client) return; // the state that follows includes it
    this.client.serverOperation(toRevision({ ...p, op: p.op_utf16 ?? p.op }));
    this.#notify();
  }

  #send(out) {
    if (!this.#synced || !this.#channel) return; // the next catch-up resends it
    const epoch = this.#epoch;
    const payload = { op: out.op.toJSON(), version: out.baseVersion, client_id: this.clientId, seq: out.seq };
    const current = () => epoch === this.#epoch && this.client.outstanding?.seq === out.seq;
    const push = this.#channel.push("operation", payload, this.pushTimeout);
    this.#pushes.add(push);
    push
      .receive("ok", (resp) => {
        this.#pushes.delete(push);
        if (epoch !== this.#epoch) return;
        this.#guard(() => this.client.serverAck({ version: resp.version, seq: out.seq }));
        this.#notify();
      })
      .receive("error", (resp) => {
        this.#pushes.delete(push);
        if (!current()) return;
        const reason = resp?.reason ?? "error";
        if (RETRY.has(reason)) {
          this.#reopen({ delay: reason === "overloaded" ? 100 + Math.random() * 400 : 0 });
        } else {
          // The server refuses this edit for good: local state cannot be kept.
          this.onError(reason, resp);
          this.#reopen({ fresh: true });
        }
      })
      .receive("timeout", () => {
        this.#pushes.delete(push);
        if (current() && this.#synced) this.#reopen();
      });
  }

  #dropPushes() {
    for (const push of this.#pushes) push.cancelTimeout();
    this.#pushes.clear();
  }

  /** Runs a handler; a server message the client cannot fit means its copy is unusable. */
  #guard(fn, payload) {
    try {
      fn(payload);
    } catch (err) {
      this.onError("client_error", { message: err.message });
      this.#reopen({ fresh: true });
    }
  }

  #fail(reason, response) {
    this.#closed = true;
    this.#epoch++;
    this.#dropPushes();
    this.#synced = false;
    this.#channel?.leave();
    this.#channel = null;
    this.onError(reason, response);
    if (this.#joined) {
      this.#joined.reject(Object.assign(new Error(`document ${this.topic}: ${reason}`), { reason, response }));
      this.#joined = null;
    }
    this.#notify();
  }

  #resolveJoin() {
    if (this.#joined) {
      this.#joined.resolve({ text: this.client.text, version: this.client.version });
      this.#joined = null;
    }
  }

  #notify() {
    for (const w of [...this.#waiters]) {
      let done = false;
      try {
        done = w.predicate(this);
      } catch (err) {
        clearTimeout(w.timer);
        this.#waiters = this.#waiters.filter((x) => x !== w);
        w.reject(err);
        continue;
      }
      if (done) {
        clearTimeout(w.timer);
        this.#waiters = this.#waiters.filter((x) => x !== w);
        w.resolve(this);
      }
    }
  }
}

function toRevision(p) {
  return {
    op: p.op instanceof TextOperation ? p.op : TextOperation.fromJSON(p.op),
    version: p.version,
    clientId: p.client_id ?? p.clientId ?? null,
    seq: p.seq ?? null,
    userId: p.user_id ?? p.userId ?? null,
  };
}
