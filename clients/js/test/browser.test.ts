/**
 * The client in real headless Chromium against a real gogate with its development backend:
 * messaging, acks and errors, token expiry and refusal, revocation, a gateway restart, and a
 * resume across a network cut.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  Browser, CAROL, DAVE, GENERAL, Gateway, JANE, JOHN, PageServer, Relay, TabClient, sleep,
} from "./harness.js";

/** Fast reconnects, so the tests do not wait out production backoff. */
const QUICK_RECONNECT = { reconnect: { initialDelay: 100, maxDelay: 500 } };

let pages: PageServer;
let browser: Browser;

before(async () => {
  pages = await PageServer.start();
  browser = await Browser.launch(pages.url);
});

after(async () => {
  await browser?.close();
  await pages?.close();
});

/** A client named `name` in a new tab of `gateway`'s world. */
async function tab(gateway: Gateway, name: string): Promise<TabClient> {
  return new TabClient(await browser.page((user, ttl) => gateway.mintToken(user, ttl)), name);
}

describe("with one gateway", () => {
  let gateway: Gateway;

  before(async () => {
    gateway = await Gateway.start();
  });

  after(async () => {
    await gateway?.stop();
  });

  test("two clients exchange a message, a typing indicator, a reaction and a read receipt",
       async () => {
    const john = await tab(gateway, "john");
    const jane = await tab(gateway, "jane");
    const johnUp = await john.start({ url: gateway.wsUrl, userId: JOHN,
                                      token: await gateway.mintToken(JOHN) });
    assert.equal(johnUp.info?.userId, JOHN);
    assert.equal(johnUp.info?.name, "John Doe");
    await jane.start({ url: gateway.wsUrl, userId: JANE, token: await gateway.mintToken(JANE) });
    assert.equal(await john.get("state"), "connected");

    const sent = await john.call("sendMessage", { chat_id: GENERAL, text: "Hello, Jane" });
    assert.equal(sent.error, undefined);
    const messageId = (sent.value as { message_id: number }).message_id;
    assert.equal(typeof messageId, "number");

    const [received] = await jane.waitFor("new_message", 1, (e) => e.data?.id === messageId);
    assert.equal(received?.data?.chat_id, GENERAL);
    assert.equal(received?.data?.text, "Hello, Jane");
    await john.waitFor("new_message", 1, (e) => e.data?.id === messageId);

    const typed = await jane.call("typing", GENERAL, true);
    assert.equal(typed.value, true);
    const [typing] = await john.waitFor("user_typing");
    assert.deepEqual(typing?.data, { chat_id: GENERAL, user_id: JANE, name: "Jane Smith",
                                     is_typing: true });

    const reacted = await jane.call("addReaction", { message_id: messageId, emoji: "👍",
                                                     chat_id: GENERAL });
    assert.deepEqual(reacted, { value: {} });
    const [reaction] = await john.waitFor("new_reaction");
    assert.equal(reaction?.data?.emoji, "👍");
    assert.equal(reaction?.data?.user_id, JANE);

    const read = await jane.call("markRead", { message_ids: [messageId], chat_id: GENERAL });
    assert.deepEqual(read, { value: {} });
    const [receipt] = await john.waitFor("message_read");
    assert.deepEqual(receipt?.data?.message_ids, [messageId]);

    assert.deepEqual(await john.events("error"), []);
    await john.page.close();
    await jane.page.close();
  });

  test("refused requests reject with a GogateError carrying the gateway's code", async () => {
    const dave = await tab(gateway, "dave");
    await dave.start({ url: gateway.wsUrl, userId: DAVE, token: await gateway.mintToken(DAVE) });

    const invalid = await dave.call("sendMessage", { chat_id: 0, text: "nowhere" });
    assert.equal(invalid.isGogateError, true);
    assert.equal(invalid.error?.code, "INVALID_CHAT");

    const foreign = await dave.call("markRead", { message_ids: [1], chat_id: GENERAL });
    assert.equal(foreign.isGogateError, true);
    assert.equal(foreign.error?.code, "NOT_A_MEMBER");

    const late = await dave.call("send", "send_message", { chat_id: 3, text: "too late" },
                                 { timeout: 0 });
    assert.equal(late.error?.code, "TIMEOUT");

    // The connection outlives its refused requests.
    const ok = await dave.call("sendMessage", { chat_id: 3, text: "Hi Carol" });
    assert.equal(typeof (ok.value as { message_id: number }).message_id, "number");
    assert.equal((await dave.events("connecting")).length, 1);
    await dave.page.close();
  });

  test("an expired token is replaced on the same connection, without a reconnect", async () => {
    const john = await tab(gateway, "john");
    const jane = await tab(gateway, "jane");
    await john.start({ url: gateway.wsUrl, userId: JOHN, tokenTtl: 60,
                       token: await gateway.mintToken(JOHN, 1) });
    await jane.start({ url: gateway.wsUrl, userId: JANE, token: await gateway.mintToken(JANE) });

    await john.waitFor("getToken", 1, () => true, 8000);
    await sleep(300);
    const sent = await john.call("sendMessage", { chat_id: GENERAL, text: "still here" });
    const messageId = (sent.value as { message_id: number } | undefined)?.message_id;
    assert.equal(typeof messageId, "number", JSON.stringify(sent));
    await jane.waitFor("new_message", 1, (e) => e.data?.id === messageId);

    assert.equal((await john.events("connecting")).length, 1);
    assert.deepEqual(await john.events("disconnected"), []);
    assert.deepEqual(await john.events("error"), []);
    await john.page.close();
    await jane.page.close();
  });

  test("a refused token is replaced once by getToken; a second refusal stops the client",
       async () => {
    const jane = await tab(gateway, "jane");
    const up = await jane.start({ url: gateway.wsUrl, userId: JANE, token: "not-a-token" });
    assert.equal(up.info?.userId, JANE);
    assert.equal((await jane.events("getToken")).length, 1);

    const carol = await tab(gateway, "carol");
    const refused = await carol.start({
      url: gateway.wsUrl, userId: CAROL, token: "not-a-token", refresh: false,
    });
    assert.equal(refused.error?.code, "AUTH_FAILED");
    const [failure] = await carol.waitFor("auth_failed");
    assert.equal(failure?.info?.code, "AUTH_FAILED");
    assert.equal(await carol.get("state"), "closed");
    await sleep(500);
    assert.equal((await carol.events("connecting")).length, 1);
    await jane.page.close();
    await carol.page.close();
  });

  test("a revoked user is not reconnected", async () => {
    const jane = await tab(gateway, "jane");
    await jane.start({ url: gateway.wsUrl, userId: JANE, token: await gateway.mintToken(JANE),
                      options: QUICK_RECONNECT });
    await gateway.revoke(JANE);
    const [closed] = await jane.waitFor("disconnected");
    assert.equal(closed?.info?.code, 4001);
    assert.equal(closed?.info?.willRetry, false);
    await sleep(800);
    assert.equal((await jane.events("connecting")).length, 1);
    assert.equal(await jane.get("state"), "closed");
    const after = await jane.call("sendMessage", { chat_id: GENERAL, text: "gone" });
    assert.equal(after.error?.code, "CLOSED");
    await jane.page.close();
  });
});

test("after a gateway restart the client reconnects by itself and sends what was queued",
     async () => {
  const gateway = await Gateway.start();
  try {
    const john = await tab(gateway, "john");
    await john.start({ url: gateway.wsUrl, userId: JOHN, token: await gateway.mintToken(JOHN),
                      options: QUICK_RECONNECT });

    await gateway.stop();
    const [down] = await john.waitFor("disconnected");
    assert.equal(down?.info?.code, 1001);
    assert.equal(down?.info?.willRetry, true);
    // Sent while the gateway is down: it waits for the next connection.
    const queued = john.call("sendMessage", { chat_id: GENERAL, text: "sent while away" },
                             { timeout: 20000 });
    await gateway.start();

    const connected = await john.waitFor("connected", 2, () => true, 15000);
    assert.equal(connected[1]?.info?.reconnected, true);
    // A restarted gateway kept nothing of the old stream: the application is told to reload.
    const [reset] = await john.waitFor("reset");
    assert.equal(reset?.info?.reason, "not_recovered");
    const result = await queued;
    const messageId = (result.value as { message_id: number } | undefined)?.message_id;
    assert.equal(typeof messageId, "number", JSON.stringify(result));

    const jane = await tab(gateway, "jane");
    await jane.start({ url: gateway.wsUrl, userId: JANE, token: await gateway.mintToken(JANE) });
    const sent = await jane.call("sendMessage", { chat_id: GENERAL, text: "welcome back" });
    const janeId = (sent.value as { message_id: number }).message_id;
    await john.waitFor("new_message", 1, (e) => e.data?.id === janeId);
    await john.page.close();
    await jane.page.close();
  } finally {
    await gateway.stop();
  }
});

test("after a network cut the client resumes its stream: every missed message, once, in order",
     async () => {
  const gateway = await Gateway.start();
  const relay = await Relay.start(gateway.port);
  try {
    const john = await tab(gateway, "john");
    const jane = await tab(gateway, "jane");
    const up = await john.start({ url: relay.wsUrl(), userId: JOHN,
                                  token: await gateway.mintToken(JOHN), options: QUICK_RECONNECT });
    assert.ok(up.info?.stream, `the gateway offers no stream: ${JSON.stringify(up.info)}`);
    await jane.start({ url: gateway.wsUrl, userId: JANE, token: await gateway.mintToken(JANE) });

    const first = await jane.call("sendMessage", { chat_id: GENERAL, text: "before the cut" });
    await john.waitFor("new_message", 1, (e) => e.data?.id ===
      (first.value as { message_id: number }).message_id);

    relay.cut();
    await john.waitFor("disconnected");
    const missed: number[] = [];
    for (let i = 0; i < 5; i++) {
      const sent = await jane.call("sendMessage", { chat_id: GENERAL, text: `missed ${i}` });
      missed.push((sent.value as { message_id: number }).message_id);
    }
    relay.restore();

    await john.waitFor("recovered", 1, () => true, 15000);
    const live = await jane.call("sendMessage", { chat_id: GENERAL, text: "after the cut" });
    const liveId = (live.value as { message_id: number }).message_id;
    await john.waitFor("new_message", 1, (e) => e.data?.id === liveId);

    const messages = await john.events("new_message");
    assert.deepEqual(messages.map((e) => e.data?.id),
                     [(first.value as { message_id: number }).message_id, ...missed, liveId]);
    const offsets = messages.map((e) => e.offset as number);
    assert.deepEqual(offsets, offsets.map((_, i) => (offsets[0] as number) + i));
    assert.deepEqual(await john.events("reset"), []);
    const position = await john.get<{ offset: number }>("position");
    assert.equal(position.offset, offsets[offsets.length - 1]);
    await john.page.close();
    await jane.page.close();
  } finally {
    await relay.close();
    await gateway.stop();
  }
});
