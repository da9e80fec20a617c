// Phoenix.Presence with the official phoenix.js client: several users, several tabs, over two
// shards. Every client's Presence (onSync / list / onJoin / onLeave) shows the same users.
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "phoenix";
import {
  Mailbox, closeAll, connect, disconnect, join, leave, makeDataDir, mintToken, push, removeDataDir,
  shardConnections, startServer, test,
} from "./helpers.mjs";

const PORT = 14113;
const TOPIC = "room:presence";
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

/** A tab: a socket of `sub`, joined to `topic`, with a phoenix.js Presence. */
async function openTab(sub, name, topic = TOPIC) {
  const socket = await connect(PORT, { token: await mintToken(dataDir, { sub, name }) });
  const channel = socket.channel(topic, {});
  const presence = new Presence(channel);
  const syncs = new Mailbox();
  const joins = [];
  const leaves = [];
  presence.onSync(() => syncs.put(summary(presence)));
  presence.onJoin((id, current, joined) => joins.push({ id, metas: joined.metas.length }));
  presence.onLeave((id, current, left) => leaves.push({ id, remaining: current.metas.length }));
  await join(channel);
  return { sub, socket, channel, presence, syncs, joins, leaves };
}

/** {user id: number of metas}, from presence.list. */
function summary(presence) {
  return Object.fromEntries(presence.list((id, { metas }) => [id, metas.length]));
}

/** Waits until this tab's presence list shows `expected`. */
function sees(tab, expected, what) {
  return tab.syncs.until(() => JSON.stringify(sortKeys(summary(tab.presence))) === JSON.stringify(sortKeys(expected)),
    10_000, `${tab.sub} to see ${what} (${JSON.stringify(expected)})`);
}

const sortKeys = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));

test("presence lists agree for several users and tabs across two shards", async () => {
  const plan = [["ada", "Ada"], ["ada", "Ada"], ["bo", "Bo"], ["cy", "Cy"], ["cy", "Cy"], ["cy", "Cy"]];
  const tabs = [];
  for (const [sub, name] of plan) tabs.push(await openTab(sub, name));
  // The kernel picks each connection's shard; reopen tabs (bounded) until both shards have some.
  for (let attempt = 0; ; attempt++) {
    const perShard = await shardConnections(PORT);
    if (perShard["0"] > 0 && perShard["1"] > 0) break;
    assert.ok(attempt < 40, `connections never reached both shards: ${JSON.stringify(perShard)}`);
    const i = attempt % tabs.length;
    await disconnect(tabs[i].socket);
    tabs[i] = await openTab(...plan[i]);
  }
  const everyone = { ada: 2, bo: 1, cy: 3 };
  await Promise.all(tabs.map((t) => sees(t, everyone, "everyone")));

  // Metas carry the Phoenix fields; a status change is a new meta (new phx_ref) for everyone.
  const cyMetas = () => tabs[0].presence.list((id, { metas }) => (id === "cy" ? metas : null)).filter(Boolean)[0];
  for (const m of cyMetas()) {
    assert.equal(typeof m.phx_ref, "string");
    assert.equal(m.name, "Cy");
    assert.equal(m.status, "online");
    assert.equal(m.typing, false);
    assert.ok(!Number.isNaN(Date.parse(m.joined_at)));
  }
  const refsBefore = cyMetas().map((m) => m.phx_ref);
  assert.equal((await push(tabs[3].channel, "status", { status: "away" })).status, "ok");
  await tabs[0].syncs.until(() => cyMetas().some((m) => m.status === "away"), 10_000, "Cy away");
  const away = cyMetas().find((m) => m.status === "away");
  assert.ok(!refsBefore.includes(away.phx_ref), "updated meta has a new phx_ref");
  assert.equal(cyMetas().length, 3);

  // Typing shows in the meta too.
  await push(tabs[2].channel, "typing", { typing: true });
  await tabs[5].syncs.until(
    () => tabs[5].presence.list((id, { metas }) => id === "bo" && metas[0].typing).some(Boolean), 10_000, "Bo typing");

  // An Ada tab leaves, Bo disconnects, a Cy tab disconnects: the others' lists follow, and
  // onLeave reports what remains of each user.
  await leave(tabs[1].channel);
  await disconnect(tabs[2].socket);
  await disconnect(tabs[4].socket);
  const rest = [tabs[0], tabs[3], tabs[5]];
  await Promise.all(rest.map((t) => sees(t, { ada: 1, cy: 2 }, "after the leaves")));
  const watcherLeaves = tabs[0].leaves;
  assert.ok(watcherLeaves.some((l) => l.id === "bo" && l.remaining === 0));
  assert.ok(watcherLeaves.some((l) => l.id === "ada" && l.remaining === 1));

  // A newcomer's presence_state agrees with what everyone converged to.
  const late = await openTab("di", "Di");
  await sees(late, { ada: 1, cy: 2, di: 1 }, "the state");
  await Promise.all(rest.map((t) => sees(t, { ada: 1, cy: 2, di: 1 }, "Di")));
  const refs = (t) => t.presence.list((id, { metas }) => metas.map((m) => `${id}/${m.phx_ref}`)).flat().sort();
  for (const t of rest) assert.deepEqual(refs(t), refs(late));
  assert.ok(late.joins.some((j) => j.id === "di"));
});

test("collaboration: cursors and selections show in every client's presence", async () => {
  const topic = "collaboration:doc7";
  const ada = await openTab("ada", "Ada", topic);
  const bo = await openTab("bo", "Bo", topic);
  await sees(bo, { ada: 1, bo: 1 }, "both");
  const adaMeta = () => bo.presence.list((id, { metas }) => (id === "ada" ? metas[0] : null)).filter(Boolean)[0];
  assert.equal((await push(ada.channel, "cursor_move", { position: { line: 4, ch: 2 } })).status, "ok");
  assert.equal((await push(ada.channel, "text_selection", { selection: { from: 10, to: 20 } })).status, "ok");
  await bo.syncs.until(() => adaMeta()?.selection?.to === 20 && adaMeta()?.cursor?.line === 4, 10_000, "cursor and selection");
  assert.deepEqual(adaMeta().cursor, { line: 4, ch: 2 });
  assert.deepEqual(adaMeta().selection, { from: 10, to: 20 });
});
