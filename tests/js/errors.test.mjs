import { after, before } from "node:test";
import assert from "node:assert/strict";
import { RawClient, closeAll, startServer, test } from "./helpers.mjs";

const PORT = 14106;
const MAX_MESSAGE_SIZE = 65536;
let server;

before(async () => {
  server = await startServer(PORT, { env: { SHARDCAST_WEBSOCKET__MAX_MESSAGE_SIZE: String(MAX_MESSAGE_SIZE) } });
});
after(async () => {
  await closeAll();
  await server?.stop();
});

/** A raw V2 client joined to `topic` (join ref "1"). */
async function joinedClient(topic) {
  const client = await RawClient.open(PORT);
  const [, , , , { status }] = await client.request("1", "1", topic, "phx_join");
  assert.equal(status, "ok");
  return client;
}

test("malformed text closes only that connection, with code 1011", async () => {
  const bystander = await joinedClient("echo:err");
  const offender = await joinedClient("echo:err");
  offender.send("not json");
  assert.equal((await offender.waitClosed()).code, 1011);

  assert.deepEqual(await bystander.request("1", "2", "echo:err", "echo", { still: "alive" }), [
    "1", "2", "echo:err", "phx_reply", { response: { still: "alive" }, status: "ok" },
  ]);
});

test("a frame over the max message size closes the connection with code 1009", async () => {
  const client = await joinedClient("echo:big");
  const big = JSON.stringify(["1", "2", "echo:big", "echo", { data: "x".repeat(100 * 1024) }]);
  assert.ok(big.length > MAX_MESSAGE_SIZE);
  client.send(big);
  assert.equal((await client.waitClosed()).code, 1009);
});

test("V1 JSON serializer: join reply is an object", async () => {
  const client = await RawClient.open(PORT, "1.0.0");
  client.send({ topic: "echo:v1", event: "phx_join", payload: {}, ref: "1", join_ref: "1" });
  const [reply] = await client.messages.count(1);
  assert.deepEqual(reply, {
    event: "phx_reply", payload: { response: {}, status: "ok" }, ref: "1", topic: "echo:v1",
  });
});
