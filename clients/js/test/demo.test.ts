/**
 * The demo page (`/demo` of `python -m gogate --dev`) in real headless Chromium: two tabs, as
 * John and Jane, exchange a message, a typing indicator, a reaction and a read receipt through
 * the page's own controls, and the test leaves a screenshot of John's tab in
 * `test-results/demo.png` (and at `$DEMO_SCREENSHOT` when set, e.g. `../../docs/demo.png`).
 */

import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";

import { chromium, type BrowserContext, type Page } from "playwright-core";

import { CAROL, GENERAL, Gateway, JANE, JOHN } from "./harness.js";

/** Chat 3 "Carol & Dave". */
const CAROL_DAVE = 3;

/** clients/js, from the compiled build-test/test/. */
const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const SCREENSHOT = join(PACKAGE_DIR, "test-results", "demo.png");

let gateway: Gateway;
let context: BrowserContext;
let profile: string;
/** What went wrong inside the pages: uncaught exceptions and console errors (CSP included). */
const problems: string[] = [];

before(async () => {
  gateway = await Gateway.start();
  profile = mkdtempSync(join(tmpdir(), "gogate-demo-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 760 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await context?.close();
  if (profile !== undefined) rmSync(profile, { recursive: true, force: true });
  await gateway?.stop();
});

function demoUrl(query = ""): string {
  return `http://${gateway.host}:${gateway.port}/demo${query}`;
}

async function open(query: string): Promise<Page> {
  const page = await context.newPage();
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  await page.goto(demoUrl(query));
  return page;
}

/** A tab signed in as `userId` with chat `chatId` open, once its connection is up. */
async function signIn(userId: number, chatId: number): Promise<Page> {
  const page = await open(`?user=${userId}&chat=${chatId}`);
  await page.waitForSelector('#state[data-state="connected"]');
  await page.waitForSelector(`.chat-item[data-chat="${chatId}"][aria-current="true"]`);
  return page;
}

/** The text of the first element matching `selector`, once it is `expected`. */
async function textOf(page: Page, selector: string, expected: string | RegExp): Promise<string> {
  const locator = page.locator(selector).first();
  await locator.waitFor();
  let text = "";
  const deadline = Date.now() + 10000;
  for (;;) {
    text = (await locator.textContent()) ?? "";
    if (typeof expected === "string" ? text === expected : expected.test(text)) return text;
    if (Date.now() > deadline) {
      assert.fail(`${selector} shows ${JSON.stringify(text)}, not ${String(expected)}`);
    }
    await page.waitForTimeout(50);
  }
}

describe("the demo page", () => {
  test("without a user it lists the demo users to pick from", async () => {
    const page = await open("");
    await page.waitForSelector("#landing:not([hidden])");
    const names = await page.locator(".pick").allTextContents();
    assert.deepEqual(names.map((name) => name.replace(/^[A-Z]{2}/, "")),
                     ["John Doe", "Jane Smith", "Carol White", "Dave Black"]);
    await page.locator('.pick[data-user="2"]').click();
    await page.waitForSelector('#state[data-state="connected"]');
    assert.match(await page.title(), /Jane Smith/);
    await page.close();
  });

  test("John and Jane exchange a message, typing, a reaction and a read receipt", async () => {
    const john = await signIn(JOHN, GENERAL);
    const jane = await signIn(JANE, GENERAL);
    const carol = await signIn(CAROL, CAROL_DAVE);  // in another chat: General is unread
    assert.deepEqual(await john.locator(".chat-item .chat-title").allTextContents(),
                     ["General", "John & Jane"]);

    // John types: Jane sees him typing, in the chat and in her chat list.
    await john.locator("#text").pressSequentially("Hello Jane, the gateway is up", { delay: 5 });
    await textOf(jane, "#typing", "John is typing…");
    await textOf(jane, `.chat-item[data-chat="${GENERAL}"] .chat-sub`, "John typing…");

    // He sends: the message reaches both tabs and Jane's typing line clears; Carol, reading
    // another chat, gets an unread count on General.
    await john.locator("#text").press("Enter");
    const janeSees = jane.locator(".message", { hasText: "Hello Jane, the gateway is up" });
    await janeSees.waitFor();
    assert.equal(await janeSees.locator(".sender").textContent(), "John Doe");
    await john.locator(".message.mine", { hasText: "Hello Jane, the gateway is up" }).waitFor();
    await textOf(jane, "#typing", "");
    await textOf(carol, `.chat-item[data-chat="${GENERAL}"] .badge`, "1");

    // Jane's open tab read it (Carol's did not): John's message says so.
    await textOf(john, ".message.mine .receipt", "✓✓ Seen by Jane");

    // Jane reacts with 👍: John sees the reaction with her name on it.
    const messageId = await janeSees.getAttribute("data-id");
    assert.ok(messageId !== null);
    await janeSees.hover();
    await janeSees.locator('.react[data-emoji="👍"]').click();
    const chip = john.locator(`.message[data-id="${messageId}"] .reaction[data-emoji="👍"]`);
    await chip.waitFor();
    assert.equal(await chip.textContent(), "👍 1");
    assert.equal(await chip.getAttribute("title"), "Jane Smith");
    await jane.locator(`.message[data-id="${messageId}"] .reaction.mine`).waitFor();

    // Jane answers and starts another line: John's tab shows both, and its event log every
    // kind of event.
    await jane.locator("#text").fill("Hi John! Both tabs update live 🎉");
    await jane.locator("#composer button").click();
    await john.locator(".message", { hasText: "Both tabs update live" }).waitFor();
    await textOf(carol, `.chat-item[data-chat="${GENERAL}"] .badge`, "2");
    await jane.locator("#text").pressSequentially("Typing indicators too", { delay: 5 });
    await textOf(john, "#typing", "Jane is typing…");
    const logged = await john.locator("#log code").allTextContents();
    for (const event of ["new_message", "user_typing", "new_reaction", "message_read"]) {
      assert.ok(logged.includes(event), `John's event log lacks ${event}: ${logged.join(" ")}`);
    }

    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await john.screenshot({ path: SCREENSHOT });
    if (process.env.DEMO_SCREENSHOT) copyFileSync(SCREENSHOT, process.env.DEMO_SCREENSHOT);

    assert.deepEqual(problems, []);
    await Promise.all([john.close(), jane.close(), carol.close()]);
  });

  test("a user cannot read the messages of a chat they are not in", async () => {
    const response = await fetch(demoUrl(`/api/users/4/chats/${GENERAL}/messages`));
    assert.equal(response.status, 403);
  });
});
