/**
 * The gogate demo page: one demo user's chats over the gateway's own `/ws`, with messages,
 * typing indicators, reactions and read receipts arriving live. Open a second tab as another
 * user (`?user=2`) and watch both update.
 *
 * Built by `npm run build` into the gateway's development package (served at `/demo` by
 * `python -m gogate --dev`), on the typed client of this package.
 */

import { GogateClient, GogateError, type Frame, type Message } from "../src/index.js";
import { demoApi, type ChatMessage, type DemoChat, type DemoUser } from "./api.js";
import {
  avatar, byId, h, logEvent, messageElement, renderChats, senderName, typingText, userOption,
} from "./view.js";

/** While keys are pressed, the user says "typing" again this often (ms). */
const TYPING_REPEAT = 3000;
/** Without a key for this long, the user has stopped typing (ms). */
const TYPING_IDLE = 4000;
/** Someone else's "typing" is shown this long unless renewed (ms). */
const TYPING_SHOWN = 6000;
/** The most message ids one `mark_read` may carry. */
const READ_BATCH = 100;

interface Typist {
  name: string;
  timer: ReturnType<typeof setTimeout>;
}

/** One text line for the event log: what a frame from the gateway says. */
function summary(frame: Frame): string {
  const data = (frame.data ?? {}) as Record<string, unknown>;
  switch (frame.event) {
    case "auth_success":
      return `${String(data.name)} (user ${String(data.user_id)})`;
    case "new_message":
      return `${senderName(data as ChatMessage)}: ${String(data.text ?? "")}`;
    case "user_typing":
      return `${String(data.name)} ${data.is_typing === true ? "is typing" : "stopped typing"}`;
    case "new_reaction":
      return `${String(data.name)} ${String(data.emoji)} on message ${String(data.message_id)}`;
    case "message_read":
      return `${String(data.name)} read ${(data.message_ids as number[]).join(", ")}`;
    case "ack":
      return `ref ${String(frame.ref)}`;
    case "error":
      return `${String(data.code)}: ${String(data.message)}`;
    default:
      return JSON.stringify(data).slice(0, 120);
  }
}

class DemoPage {
  private readonly client: GogateClient;
  private current: number | null = null;
  /** The open chat's messages by id. */
  private messages = new Map<number, ChatMessage>();
  private readonly unread = new Map<number, number>();
  /** Who is typing, by chat and user. */
  private readonly typists = new Map<number, Map<number, Typist>>();
  private typingChat: number | null = null;
  private typingSentAt = 0;
  private typingIdle: ReturnType<typeof setTimeout> | null = null;

  private readonly list = byId("messages");
  private readonly typingLine = byId("typing");
  private readonly chatList = byId("chats");
  private readonly state = byId("state");
  private readonly notice = byId("notice");
  private readonly input = byId<HTMLInputElement>("text");

  constructor(private readonly me: DemoUser, private readonly chats: DemoChat[]) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.client = new GogateClient({
      url: `${scheme}://${location.host}/ws`,
      getToken: () => demoApi.token(me.id),
      reconnect: { initialDelay: 500, maxDelay: 5000 },
    });
    this.listen();
    byId("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.send();
    });
    this.input.addEventListener("input", () => this.keyPressed());
    document.addEventListener("visibilitychange", () => this.markRead());
  }

  async start(chatId: number | null): Promise<void> {
    this.renderChatList();
    await this.client.connect();
    const first = this.chats.find((chat) => chat.id === chatId) ?? this.chats[0];
    if (first !== undefined) await this.open(first.id);
  }

  // --- what the gateway sends ---------------------------------------------------------------

  private listen(): void {
    const client = this.client;
    const log = byId("log");
    client.on("frame", (frame) => logEvent(log, frame.event, summary(frame)));
    client.on("connecting", ({ attempt }) =>
      this.showState("connecting", attempt > 0 ? `connecting (attempt ${attempt + 1})…`
        : "connecting…"));
    client.on("connected", ({ name }) => this.showState("connected", `online as ${name}`));
    client.on("disconnected", ({ code, willRetry, delay }) => this.showState(
      willRetry ? "waiting" : "closed",
      willRetry ? `offline (${code}), retrying in ${Math.ceil((delay ?? 0) / 1000)} s`
        : `offline (${code})`));
    client.on("auth_failed", (error) => this.showState("closed", `refused: ${error.code}`));
    client.on("error", (error) => this.say(`${error.code}: ${error.message}`));
    client.on("reset", () => {
      if (this.current !== null) void this.open(this.current);
    });
    client.on("new_message", (message) => this.received(message));
    client.on("user_typing", ({ chat_id, user_id, name, is_typing }) =>
      this.typed(chat_id, user_id, name, is_typing));
    client.on("new_reaction", ({ message_id, user_id, name, emoji }) => {
      const message = this.messages.get(message_id);
      if (message === undefined) return;
      if (!message.reactions.some((r) => r.user_id === user_id && r.emoji === emoji)) {
        message.reactions.push({ user_id, name, emoji });
      }
      this.show(message);
    });
    client.on("message_read", ({ message_ids, user_id, name }) => {
      for (const id of message_ids) {
        const message = this.messages.get(id);
        if (message === undefined || message.read_by.some((r) => r.user_id === user_id)) continue;
        message.read_by.push({ user_id, name });
        this.show(message);
      }
    });
  }

  private received(data: Message): void {
    const message: ChatMessage = { ...data, reactions: [], read_by: [] };
    const sender = message.user?.id;
    if (sender !== undefined) this.typed(message.chat_id, sender, "", false);
    if (message.chat_id !== this.current) {
      if (sender !== this.me.id) {
        this.unread.set(message.chat_id, (this.unread.get(message.chat_id) ?? 0) + 1);
        this.renderChatList();
      }
      return;
    }
    if (this.messages.has(message.id)) return;
    this.messages.set(message.id, message);
    this.show(message);
    this.markRead();
  }

  private typed(chatId: number, userId: number, name: string, isTyping: boolean): void {
    if (userId === this.me.id) return;
    const typists = this.typists.get(chatId) ?? new Map<number, Typist>();
    this.typists.set(chatId, typists);
    const before = typists.get(userId);
    if (before !== undefined) clearTimeout(before.timer);
    if (isTyping) {
      const timer = setTimeout(() => this.typed(chatId, userId, name, false), TYPING_SHOWN);
      typists.set(userId, { name, timer });
    } else if (before === undefined) {
      return;
    } else {
      typists.delete(userId);
    }
    this.renderTyping();
    this.renderChatList();
  }

  // --- what the user does -------------------------------------------------------------------

  private async open(chatId: number): Promise<void> {
    this.current = chatId;
    this.messages = new Map();
    this.unread.delete(chatId);
    const chat = this.chats.find((c) => c.id === chatId);
    byId("chat-name").textContent = chat?.name ?? `Chat ${chatId}`;
    byId("chat-members").replaceChildren(...(chat?.members ?? []).map((member) =>
      h("span", { class: "member" }, avatar(member), member.id === this.me.id ? "You"
        : member.name)));
    this.list.replaceChildren();
    this.renderChatList();
    this.renderTyping();
    const url = new URL(location.href);
    url.searchParams.set("chat", String(chatId));
    history.replaceState(null, "", url);
    const recent = await demoApi.messages(this.me.id, chatId);
    if (this.current !== chatId) return;
    for (const message of recent) {
      if (!this.messages.has(message.id)) this.messages.set(message.id, message);
    }
    for (const message of [...this.messages.values()].sort((a, b) => a.id - b.id)) {
      this.show(message);
    }
    this.input.focus();
    this.markRead();
  }

  private async send(): Promise<void> {
    const text = this.input.value.trim();
    if (text === "" || this.current === null) return;
    this.input.value = "";
    this.stopTyping();
    try {
      await this.client.sendMessage({ chat_id: this.current, text });
      this.say("");
    } catch (err) {
      this.input.value = text;
      this.say(err instanceof GogateError ? `Not sent: ${err.code}` : `Not sent: ${String(err)}`);
    }
  }

  private keyPressed(): void {
    if (this.current === null) return;
    if (this.input.value.trim() === "") {
      this.stopTyping();
      return;
    }
    const now = Date.now();
    if (this.typingChat !== this.current || now - this.typingSentAt > TYPING_REPEAT) {
      if (this.typingChat !== null && this.typingChat !== this.current) this.stopTyping();
      if (this.client.typing(this.current, true)) {
        this.typingChat = this.current;
        this.typingSentAt = now;
      }
    }
    if (this.typingIdle !== null) clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE);
  }

  private stopTyping(): void {
    if (this.typingIdle !== null) clearTimeout(this.typingIdle);
    this.typingIdle = null;
    if (this.typingChat !== null) this.client.typing(this.typingChat, false);
    this.typingChat = null;
    this.typingSentAt = 0;
  }

  private react(message: ChatMessage, emoji: string): void {
    this.client.addReaction({ message_id: message.id, emoji, chat_id: message.chat_id })
      .catch((err: unknown) => this.say(err instanceof GogateError
        ? `Reaction not added: ${err.code}` : String(err)));
  }

  /** Tells the gateway which messages of others the user has now seen (while the tab shows). */
  private markRead(): void {
    const chatId = this.current;
    if (chatId === null || document.visibilityState !== "visible") return;
    const unseen = [...this.messages.values()].filter((m) => m.user?.id !== this.me.id
      && !m.read_by.some((r) => r.user_id === this.me.id));
    if (unseen.length === 0) return;
    for (const message of unseen) message.read_by.push({ user_id: this.me.id, name: this.me.name });
    const ids = unseen.map((m) => m.id).slice(-READ_BATCH);
    this.client.markRead({ message_ids: ids, chat_id: chatId }).catch(() => {
      for (const message of unseen) {
        message.read_by = message.read_by.filter((r) => r.user_id !== this.me.id);
      }
    });
  }

  // --- drawing ------------------------------------------------------------------------------

  /** Draws a message in place, or appends it in id order, keeping the view at the bottom. */
  private show(message: ChatMessage): void {
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 60;
    const element = messageElement(message, this.me.id, {
      react: (m, emoji) => this.react(m, emoji),
    });
    const old = this.list.querySelector(`[data-id="${message.id}"]`);
    if (old !== null) {
      old.replaceWith(element);
      return;
    }
    const later = Array.from(this.list.children).find((li) =>
      Number((li as HTMLElement).dataset.id) > message.id);
    this.list.insertBefore(element, later ?? null);
    if (atBottom || message.user?.id === this.me.id) this.list.scrollTop = this.list.scrollHeight;
  }

  private renderTyping(): void {
    const typists = this.current === null ? undefined : this.typists.get(this.current);
    const text = typingText([...(typists?.values() ?? [])].map((t) => t.name));
    this.typingLine.textContent = text;
    this.typingLine.classList.toggle("active", text !== "");
  }

  private renderChatList(): void {
    renderChats(this.chatList, this.chats.map((chat) => ({
      chat,
      unread: this.unread.get(chat.id) ?? 0,
      typing: [...(this.typists.get(chat.id)?.values() ?? [])].map((t) => t.name.split(" ")[0]
        ?? t.name),
    })), this.current, this.me.id, (chatId) => void this.open(chatId));
  }

  private showState(state: string, text: string): void {
    this.state.dataset.state = state;
    this.state.textContent = text;
  }

  private say(text: string): void {
    this.notice.textContent = text;
  }
}

/** Without `?user=`: the list of demo users to open the page as. */
function landing(users: DemoUser[]): void {
  byId("landing").hidden = false;
  byId("who").replaceChildren(...users.map((user) => h("li", {},
    h("a", { href: `?user=${user.id}`, class: "pick", "data-user": user.id },
      avatar(user), user.name))));
}

async function main(): Promise<void> {
  const users = await demoApi.users();
  const params = new URLSearchParams(location.search);
  const me = users.find((user) => String(user.id) === params.get("user"));
  const select = byId<HTMLSelectElement>("user");
  select.replaceChildren(...(me === undefined ? [h("option", { value: "" }, "choose a user…")]
    : []), ...users.map((user) => userOption(user, user.id === me?.id)));
  select.addEventListener("change", () => {
    if (select.value !== "") location.search = `?user=${select.value}`;
  });
  if (me === undefined) {
    landing(users);
    return;
  }
  document.title = `${me.name} · gogate demo`;
  const chats = await demoApi.chats(me.id);
  const partner = users.find((user) => user.id !== me.id
    && chats.some((chat) => chat.members.some((member) => member.id === user.id)));
  const second = byId<HTMLAnchorElement>("second-tab");
  if (partner !== undefined) {
    second.href = `?user=${partner.id}`;
    second.textContent = `Open a second tab as ${partner.name}`;
    second.hidden = false;
  }
  byId("app").hidden = false;
  const chatParam = Number(params.get("chat"));
  await new DemoPage(me, chats).start(Number.isInteger(chatParam) ? chatParam : null);
}

main().catch((err: unknown) => {
  const notice = document.getElementById("fatal");
  if (notice !== null) {
    notice.hidden = false;
    notice.textContent = `The demo could not start: ${String(err)}`;
  }
});
