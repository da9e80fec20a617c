// Support for the binary fast path tests: server memory and metrics, and a phoenix.js socket
// that stops reading (a slow subscriber) and resumes.
import { readFile } from "node:fs/promises";
import { DEFAULT_TIMEOUT_MS } from "./helpers.mjs";

/** Resident memory of the server process, in bytes (VmRSS of /proc/<pid>/status). */
export async function serverRss(server) {
  const status = await readFile(`/proc/${server.proc.pid}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!kb) throw new Error(`no VmRSS in /proc/${server.proc.pid}/status`);
  return Number(kb[1]) * 1024;
}

/** The sum over shards of the counter or gauge `shardcast_<name>` from GET /metrics. */
export async function metric(port, name) {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(DEFAULT_TIMEOUT_MS) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  let sum = 0;
  for (const [, value] of text.matchAll(new RegExp(`^shardcast_${name}\\{[^}]*\\}\\s+(\\S+)`, "gm"))) {
    sum += Number(value);
  }
  return sum;
}

/** Stops reading the phoenix.js socket's connection: the kernel buffers fill, then the server's queue. */
export function pauseReading(socket) {
  socket.conn.pause();
}

export function resumeReading(socket) {
  socket.conn.resume();
}

export const MiB = 1024 * 1024;

/** A promise for the next `ms` milliseconds (pacing a sender at a fixed rate, never to wait for an outcome). */
export function tick(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
