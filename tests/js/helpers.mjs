// Shared helpers for the shardcast end-to-end tests: server process control,
// phoenix.js / raw WebSocket clients, and promise utilities with deadlines.
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { fileURLToPath } from "node:url";
import { test as nodeTest } from "node:test";
import { Socket } from "phoenix";
import WebSocket from "ws";

export const DEFAULT_TIMEOUT_MS = 5_000;
const TEST_TIMEOUT_MS = 60_000;
const HEALTH_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5_000;
const LOG_LIMIT = 256 * 1024;
const LIVE_LOG = process.env.SHARDCAST_TEST_LOG === "1";

export const SERVER_BIN =
  process.env.SHARDCAST_BIN ?? fileURLToPath(new URL("../../target/debug/shardcast", import.meta.url));

// ---------------------------------------------------------------------------
// Promise utilities
// ---------------------------------------------------------------------------

/** Resolves/rejects like `promise`, or rejects after `ms` with a message naming `what`. */
export function withTimeout(promise, ms = DEFAULT_TIMEOUT_MS, what = "operation") {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Polls an (async) predicate until it returns a truthy value, which is returned. */
export async function waitFor(predicate, { timeout = DEFAULT_TIMEOUT_MS, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let lastError;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const cause = lastError ? `: ${lastError.message}` : "";
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${cause}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** An append-only list whose readers can await a condition on its contents. */
export class Mailbox {
  items = [];
  #waiters = new Set();

  put(item) {
    this.items.push(item);
    for (const check of [...this.#waiters]) check();
  }

  /** Resolves with `items` once `predicate(items)` holds; rejects after `timeout` ms. */
  until(predicate, timeout = DEFAULT_TIMEOUT_MS, what = "messages") {
    return new Promise((resolve, reject) => {
      const finish = (fn, arg) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        fn(arg);
      };
      const check = () => {
        try {
          if (predicate(this.items)) finish(resolve, this.items);
        } catch (err) {
          finish(reject, err);
        }
      };
      const timer = setTimeout(() => {
        const seen = JSON.stringify(this.items.slice(-5), bufferReplacer);
        finish(reject, new Error(`timed out after ${timeout} ms waiting for ${what} (${this.items.length} received, last: ${seen})`));
      }, timeout);
      this.#waiters.add(check);
      check();
    });
  }

  /** Waits until at least `n` items arrived. */
  count(n, timeout = DEFAULT_TIMEOUT_MS, what = `${n} messages`) {
    return this.until((items) => items.length >= n, timeout, what);
  }
}

const bufferReplacer = (_key, value) =>
  value instanceof ArrayBuffer ? `<ArrayBuffer ${value.byteLength} bytes>` : value;

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

const servers = []; // every server started by this test file, for log dumps

/**
 * Environment every test server starts with (before the test's own `env`): sockets without a
 * token are allowed, as the tests of the transport and the echo channel connect without one.
 * Tests of auth and the built-in channels set SHARDCAST_AUTH__ALLOW_ANONYMOUS to "false".
 */
export const DEFAULT_SERVER_ENV = { SHARDCAST_AUTH__ALLOW_ANONYMOUS: "true" };

/**
 * The environment for a shardcast process: this one's, less the variables of this test harness
 * (SHARDCAST_BIN, SHARDCAST_TEST_LOG), which the server would read as unknown config keys.
 */
function childEnv(extra = {}) {
  const { SHARDCAST_BIN: _bin, SHARDCAST_TEST_LOG: _log, ...env } = process.env;
  return { ...env, ...extra };
}

/**
 * Starts `shardcast serve` on 127.0.0.1:`port` and waits for GET /health to answer 200.
 * Options: shards (default 1), args (extra CLI args), env (extra environment), dataDir.
 */
export async function startServer(port, { shards = 1, args = [], env = {}, dataDir } = {}) {
  if (await healthy(port)) {
    throw new Error(`port ${port} already answers /health: a stale server is still running`);
  }
  const ownsDataDir = !dataDir;
  dataDir ??= await mkdtemp(joinPath(tmpdir(), "shardcast-e2e-"));
  const argv = ["serve", "--listen", `127.0.0.1:${port}`, "--shards", String(shards), "--data-dir", dataDir, ...args];
  const proc = spawn(SERVER_BIN, argv, {
    env: childEnv({ ...DEFAULT_SERVER_ENV, ...env }),
    stdio: ["ignore", "pipe", "pipe"],
  });

  let log = "";
  const onOutput = (chunk) => {
    log += chunk.toString();
    if (log.length > LOG_LIMIT) log = log.slice(-LOG_LIMIT);
    if (LIVE_LOG) process.stderr.write(`[shardcast:${port}] ${chunk}`);
  };
  proc.stdout.on("data", onOutput);
  proc.stderr.on("data", onOutput);

  const exited = new Promise((resolve) => {
    proc.on("error", (err) => resolve({ code: null, signal: null, error: err }));
    proc.on("exit", (code, signal) => resolve({ code, signal }));
  });
  let exitInfo = null;
  exited.then((info) => (exitInfo = info));

  const server = {
    port,
    dataDir,
    proc,
    exited,
    logs: () => log,
    /** SIGTERM, then SIGKILL if the process is still alive after 5 s. */
    async stop() {
      if (!exitInfo) {
        proc.kill("SIGTERM");
        await withTimeout(exited, STOP_GRACE_MS, "shutdown").catch(() => proc.kill("SIGKILL"));
      }
      return server.cleanup();
    },
    /** kill -9. */
    async kill() {
      if (!exitInfo) proc.kill("SIGKILL");
      return server.cleanup();
    },
    async cleanup() {
      const info = await exited;
      if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
      return info;
    },
  };
  servers.push(server);

  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  while (!(await healthy(port))) {
    if (exitInfo) {
      await server.cleanup();
      const why = exitInfo.error ? exitInfo.error.message : `code ${exitInfo.code}, signal ${exitInfo.signal}`;
      throw new Error(`shardcast exited before becoming healthy (${why}); binary: ${SERVER_BIN}\n${log}`);
    }
    if (Date.now() >= deadline) {
      await server.kill();
      throw new Error(`shardcast did not answer GET /health within ${HEALTH_TIMEOUT_MS} ms\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return server;
}

async function healthy(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1_000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

/** A fresh data directory for servers that outlive one process (restarts); see removeDataDir. */
export function makeDataDir() {
  return mkdtemp(joinPath(tmpdir(), "shardcast-e2e-"));
}

export function removeDataDir(dir) {
  return rm(dir, { recursive: true, force: true });
}

/**
 * Runs `shardcast token` for the server that uses `dataDir` (and the same environment);
 * resolves with the token. Options: sub, name, rooms (patterns), ttl (seconds), env.
 */
export function mintToken(dataDir, { sub, name, rooms = [], ttl, env = {} }) {
  const args = ["token", "--sub", sub, "--name", name, "--data-dir", dataDir];
  if (rooms.length > 0) args.push("--rooms", ...rooms);
  if (ttl !== undefined) args.push("--ttl", String(ttl));
  return new Promise((resolve, reject) => {
    execFile(SERVER_BIN, args, { env: childEnv(env), timeout: DEFAULT_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err) reject(new Error(`shardcast token failed: ${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/**
 * The HTTP status of a WebSocket handshake to /socket/websocket with `query` (101 when the
 * upgrade is accepted).
 */
export function handshakeStatus(port, query = "vsn=2.0.0") {
  return withTimeout(new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket/websocket?${query}`);
    ws.on("unexpected-response", (_req, res) => {
      res.resume();
      resolve(res.statusCode);
      ws.terminate();
    });
    ws.on("upgrade", () => {
      resolve(101);
      ws.terminate();
    });
    ws.on("error", (err) => reject(err));
  }), DEFAULT_TIMEOUT_MS, `handshake on port ${port}`);
}

/** Connects a phoenix Socket with `params` and joins `topic` with `joinParams`. */
export async function connectAndJoinWith(port, params, topic, joinParams = {}) {
  const socket = await connect(port, params);
  const channel = socket.channel(topic, joinParams);
  const response = await join(channel);
  return { socket, channel, response };
}

/** GET /metrics and return the per-shard `shardcast_connections` gauge as {shard: value}. */
export async function shardConnections(port) {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(DEFAULT_TIMEOUT_MS) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}: ${text}`);
  const result = {};
  for (const [, labels, value] of text.matchAll(/^shardcast_connections\{([^}]*)\}\s+(\S+)/gm)) {
    const shard = /(?:^|,)\s*shard="([^"]*)"/.exec(labels)?.[1];
    if (shard !== undefined) result[shard] = Number(value);
  }
  return result;
}

/**
 * node:test's `test` with a default timeout, which prints the logs of the servers
 * started by this file when the test fails.
 */
export function test(name, fn, { timeout = TEST_TIMEOUT_MS } = {}) {
  return nodeTest(name, { timeout }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      if (!LIVE_LOG) {
        for (const s of servers) {
          process.stderr.write(`\n----- shardcast :${s.port} output (test "${name}" failed) -----\n${s.logs()}\n-----\n`);
        }
      }
      throw err;
    }
  });
}

// ---------------------------------------------------------------------------
// phoenix.js clients
// ---------------------------------------------------------------------------

const openClients = new Set(); // phoenix Sockets and raw WebSockets, closed by closeAll()

/** Returns a phoenix Socket connected to ws://127.0.0.1:`port`/socket. */
export async function connect(port, params = {}, opts = {}) {
  const socket = new Socket(`ws://127.0.0.1:${port}/socket`, { transport: WebSocket, params, ...opts });
  openClients.add(socket);
  let lastError;
  socket.onError((err) => (lastError = err));
  const opened = new Promise((resolve) => socket.onOpen(resolve));
  socket.connect();
  try {
    await withTimeout(opened, DEFAULT_TIMEOUT_MS, `socket connect to port ${port}`);
  } catch (err) {
    await disconnect(socket);
    if (lastError) err.message += ` (last error: ${lastError.message ?? lastError})`;
    throw err;
  }
  return socket;
}

/** Disconnects a phoenix Socket (no reconnect) and waits for the callback. */
export async function disconnect(socket) {
  openClients.delete(socket);
  await withTimeout(new Promise((resolve) => socket.disconnect(resolve)), DEFAULT_TIMEOUT_MS, "socket disconnect");
}

/** Closes every client opened through these helpers. Use in after(). */
export async function closeAll() {
  await Promise.all(
    [...openClients].map((c) => (c instanceof Socket ? disconnect(c) : c.close())),
  );
}

/** Turns a phoenix Push into a promise of {status, response}; rejects on "timeout". */
export function reply(pushEvent, what = `reply to ${pushEvent.event} on ${pushEvent.channel.topic}`) {
  return new Promise((resolve, reject) => {
    pushEvent
      .receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => reject(new Error(`timed out waiting for ${what}`)));
  });
}

/** Joins `channel`; resolves with the join response, rejects on error (err.response) or timeout. */
export async function join(channel, timeout = DEFAULT_TIMEOUT_MS) {
  const { status, response } = await reply(channel.join(timeout), `join of ${channel.topic}`);
  if (status !== "ok") {
    throw Object.assign(new Error(`join of ${channel.topic} failed: ${JSON.stringify(response)}`), { response });
  }
  return response;
}

/** Pushes `event` on `channel`; resolves with {status, response}. */
export function push(channel, event, payload = {}, timeout = DEFAULT_TIMEOUT_MS) {
  return reply(channel.push(event, payload, timeout));
}

/** Leaves `channel`; resolves with {status, response}. */
export function leave(channel, timeout = DEFAULT_TIMEOUT_MS) {
  return reply(channel.leave(timeout), `leave of ${channel.topic}`);
}

/** Connects a new socket and joins `topic` on it; returns {socket, channel}. */
export async function connectAndJoin(port, topic, opts = {}) {
  const socket = await connect(port, {}, opts);
  const channel = socket.channel(topic);
  await join(channel);
  return { socket, channel };
}

/** Collects every `event` payload the channel receives into a Mailbox. */
export function collect(channel, event) {
  const box = new Mailbox();
  channel.on(event, (payload) => box.put(payload));
  return box;
}

// ---------------------------------------------------------------------------
// Raw WebSocket client (protocol-level tests)
// ---------------------------------------------------------------------------

/**
 * A bare `ws` client on /socket/websocket?vsn=`vsn`. Text frames are JSON-parsed into
 * `messages` (a Mailbox; unparsable text is stored as a string); `closed` resolves with
 * {code, reason} when the connection closes.
 */
export class RawClient {
  constructor(port, vsn = "2.0.0") {
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/socket/websocket?vsn=${vsn}`);
    this.messages = new Mailbox();
    this.errors = [];
    this.ws.on("error", (err) => this.errors.push(err));
    this.ws.on("message", (data, isBinary) => {
      if (isBinary) return this.messages.put(data);
      const text = data.toString();
      try {
        this.messages.put(JSON.parse(text));
      } catch {
        this.messages.put(text);
      }
    });
    this.closed = new Promise((resolve) =>
      this.ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    openClients.add(this);
  }

  static async open(port, vsn) {
    const client = new RawClient(port, vsn);
    const opened = new Promise((resolve, reject) => {
      client.ws.once("open", resolve);
      client.ws.once("error", reject);
    });
    await withTimeout(opened, DEFAULT_TIMEOUT_MS, `raw WebSocket connect to port ${port}`);
    return client;
  }

  /** Sends a string as-is, anything else as JSON text. */
  send(message) {
    this.ws.send(typeof message === "string" ? message : JSON.stringify(message));
  }

  /** Sends a V2 message and waits for the phx_reply carrying the same ref. */
  async request(joinRef, ref, topic, event, payload = {}) {
    this.send([joinRef, ref, topic, event, payload]);
    return this.replyTo(ref);
  }

  /** Waits for the V2 phx_reply with the given ref. */
  async replyTo(ref, timeout = DEFAULT_TIMEOUT_MS) {
    const isReply = (m) => Array.isArray(m) && m[1] === ref && m[3] === "phx_reply";
    const items = await this.messages.until((ms) => ms.some(isReply), timeout, `reply with ref ${ref}`);
    return items.find(isReply);
  }

  /** Waits for the connection to close; resolves with {code, reason}. */
  waitClosed(timeout = DEFAULT_TIMEOUT_MS) {
    return withTimeout(this.closed, timeout, "WebSocket close");
  }

  async close() {
    openClients.delete(this);
    if (this.ws.readyState === WebSocket.CLOSED) return;
    this.ws.close();
    try {
      await withTimeout(this.closed, DEFAULT_TIMEOUT_MS, "WebSocket close");
    } catch {
      this.ws.terminate();
    }
  }
}
