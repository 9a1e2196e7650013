// The gogate demo page, built from clients/js/demo by npm run build: edit the sources, not this file.

// src/backoff.ts
function backoffDelay(attempt, options = {}, random = Math.random) {
  const initial = options.initialDelay ?? 500;
  const cap = options.maxDelay ?? 2e4;
  const factor = options.factor ?? 2;
  const ceiling = Math.min(cap, initial * Math.pow(factor, Math.max(0, attempt)));
  return Math.floor(random() * ceiling);
}

// src/emitter.ts
var Emitter = class {
  constructor() {
    this.listeners = /* @__PURE__ */ new Map();
  }
  /** Calls `handler` on every `event` until the returned function is called. */
  on(event, handler) {
    let set = this.listeners.get(event);
    if (set === void 0) {
      set = /* @__PURE__ */ new Set();
      this.listeners.set(event, set);
    }
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }
  /** Calls `handler` on the next `event` only. */
  once(event, handler) {
    const off = this.on(event, (...args) => {
      off();
      handler(...args);
    });
    return off;
  }
  /**
   * Calls the handlers of `event` in the order they subscribed. A handler that throws does not
   * keep the others from running, nor the connection's own work: its exception goes to
   * {@link handlerFailed}.
   */
  emit(event, ...args) {
    const set = this.listeners.get(event);
    if (set === void 0) return;
    for (const handler of [...set]) {
      try {
        handler(...args);
      } catch (err) {
        this.handlerFailed(err);
      }
    }
  }
  /** Reports the exception of a handler as an uncaught error (the console shows it). */
  handlerFailed(error) {
    const report = globalThis.reportError;
    if (report !== void 0) {
      report(error);
    } else {
      setTimeout(() => {
        throw error;
      }, 0);
    }
  }
};

// src/errors.ts
var GogateError = class extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
    this.name = "GogateError";
  }
};
var ClientErrorCode = {
  TIMEOUT: "TIMEOUT",
  DISCONNECTED: "DISCONNECTED",
  CLOSED: "CLOSED"
};

// src/protocol.ts
var CloseCode = {
  /** The gateway is shutting down or restarting: reconnect. */
  GOING_AWAY: 1001,
  /** Protocol violation: the client sent something the gateway cannot read. */
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  /** The connection dropped without a close frame (network, process killed). */
  ABNORMAL: 1006,
  INVALID_PAYLOAD: 1007,
  /** Authentication failed, timed out or expired, or too many connections. */
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  /** The client read too slowly and was dropped; reconnect and resume. */
  TRY_AGAIN_LATER: 1013,
  /** The backend revoked the user: never reconnect with the same token. */
  REVOKED: 4001
};

// src/stream.ts
var StreamCursor = class {
  constructor(start) {
    this.epoch = null;
    this.offset = 0;
    if (start !== void 0) this.moveTo(start);
  }
  /** The position to resume from, or `undefined` before the gateway offered a stream. */
  get position() {
    return this.epoch === null ? void 0 : { epoch: this.epoch, offset: this.offset };
  }
  /** Forgets the position: the next connection starts without `since`. */
  clear() {
    this.epoch = null;
    this.offset = 0;
  }
  /** Continues from `position` (a new stream, a reset, or one the application kept). */
  moveTo(position) {
    this.epoch = position.epoch;
    this.offset = position.offset;
  }
  /**
   * Whether an event at `offset` is new: stream events at or below the last processed offset
   * were already handed to the application and are dropped. Events without an offset are not
   * part of the stream and always pass.
   */
  accept(offset) {
    if (offset === void 0 || this.epoch === null) return true;
    if (offset <= this.offset) return false;
    this.offset = offset;
    return true;
  }
};

// src/client.ts
var GogateClient = class extends Emitter {
  constructor(options) {
    super();
    this.socket = null;
    this.currentState = "idle";
    this.attempt = 0;
    this.reconnectTimer = null;
    this.authTimer = null;
    this.authRef = null;
    this.authenticated = false;
    this.refreshing = false;
    this.freshTokenTried = false;
    this.askedSince = false;
    this.hasConnected = false;
    this.stoppedBy = null;
    this.nextRef = 1;
    this.pending = /* @__PURE__ */ new Map();
    this.outbox = [];
    this.userInfo = null;
    this.waiters = [];
    this.url = options.url;
    this.token = options.token;
    this.getToken = options.getToken;
    const reconnect = options.reconnect ?? true;
    this.reconnectOptions = reconnect === false ? null : reconnect === true ? {} : reconnect;
    this.requestTimeout = options.requestTimeout ?? 1e4;
    this.authTimeout = options.authTimeout ?? 1e4;
    this.resume = options.resume ?? true;
    this.cursor = new StreamCursor(options.since);
    this.wantsResume = this.resume && options.since !== void 0;
    const impl = options.WebSocket ?? globalThis.WebSocket;
    if (impl === void 0) {
      throw new TypeError("no WebSocket implementation: pass one as options.WebSocket");
    }
    this.WebSocketImpl = impl;
    if (this.token === void 0 && this.getToken === void 0) {
      throw new TypeError("a token or a getToken function is required");
    }
  }
  /** Where the connection stands. */
  get state() {
    return this.currentState;
  }
  /** The authenticated user of the current connection, or `null` while not connected. */
  get user() {
    return this.authenticated ? this.userInfo : null;
  }
  /**
   * The last stream position processed, to keep (e.g. in `sessionStorage`) and give back as
   * `since` to a later client; `undefined` when the gateway keeps no stream.
   */
  get position() {
    return this.cursor.position;
  }
  /**
   * Opens the connection (once; later calls return the same wait). Resolves on the next
   * `connected`; rejects if the client stops for good before (closed, revoked, token refused).
   * Failed attempts before that are retried with backoff and do not reject.
   */
  connect() {
    if (this.currentState === "closed") {
      return Promise.reject(this.stoppedBy ?? closedError());
    }
    const wait = new Promise((resolve, reject) => {
      if (this.authenticated && this.userInfo !== null) resolve(this.userInfo);
      else this.waiters.push({ resolve, reject });
    });
    if (this.currentState === "idle") this.open();
    return wait;
  }
  /**
   * Closes the connection for good: no reconnect. Requests still waiting reject with `CLOSED`.
   */
  close() {
    this.stop(closedError(), 1e3, "closed by the application");
  }
  /**
   * Sends a request and resolves with the data of its `ack`; rejects with a
   * {@link GogateError} carrying the gateway's error code, or `TIMEOUT`, `DISCONNECTED`,
   * `CLOSED`. A request made while the client is not connected is sent once it is (within the
   * timeout).
   */
  send(event, data, options = {}) {
    if (this.currentState === "closed") {
      return Promise.reject(this.stoppedBy ?? closedError());
    }
    const ref = this.nextRef++;
    const frame = JSON.stringify({ event, data, ref });
    return new Promise((resolve, reject) => {
      const timeout = options.timeout ?? this.requestTimeout;
      const timer = setTimeout(() => {
        this.forget(ref);
        reject(new GogateError(ClientErrorCode.TIMEOUT, `no answer to ${event} within ${timeout} ms`));
      }, timeout);
      this.pending.set(ref, {
        event,
        frame,
        written: false,
        timer,
        resolve,
        reject
      });
      if (this.authenticated && !this.refreshing) this.write(ref);
      else this.outbox.push(ref);
    });
  }
  /**
   * Sends an event without asking for an answer (for `typing`, which is worth nothing late):
   * returns whether it was written, which it is only while connected.
   */
  notify(event, data) {
    if (!this.authenticated || this.refreshing || this.socket === null) return false;
    this.socket.send(JSON.stringify({ event, data }));
    return true;
  }
  /** Posts a message; resolves with its id once the backend accepted it. */
  sendMessage(data, options) {
    return this.send("send_message", data, options);
  }
  /** Tells the chat's members whether the user is typing (no answer, dropped when offline). */
  typing(chatId, isTyping) {
    return this.notify("typing", { chat_id: chatId, is_typing: isTyping });
  }
  addReaction(data, options) {
    return this.send("add_reaction", data, options);
  }
  markRead(data, options) {
    return this.send("mark_read", data, options);
  }
  /** Emits one of the client's own events. */
  fire(event, ...args) {
    this.emit(event, ...args);
  }
  // --- the socket ---------------------------------------------------------------------------
  open() {
    this.reconnectTimer = null;
    this.currentState = "connecting";
    this.fire("connecting", { attempt: this.attempt });
    let socket;
    try {
      socket = new this.WebSocketImpl(this.url);
    } catch (err) {
      this.stop(
        new GogateError(ClientErrorCode.CLOSED, `cannot open ${this.url}: ${String(err)}`),
        1e3,
        ""
      );
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket === socket) void this.authenticate(false);
    };
    socket.onmessage = (ev) => {
      if (this.socket === socket && typeof ev.data === "string") this.receive(ev.data);
    };
    socket.onclose = (ev) => {
      if (this.socket === socket) this.closed(ev.code, ev.reason);
    };
  }
  /** Sends `auth`: with the current token, or a fresh one from `getToken()`. */
  async authenticate(fresh) {
    const socket = this.socket;
    if (socket === null) return;
    if (!this.authenticated) this.currentState = "authenticating";
    let token = this.token;
    if (fresh || token === void 0) {
      if (this.getToken === void 0) return;
      try {
        token = await this.getToken();
      } catch (err) {
        if (this.socket === socket) {
          this.fire("error", new GogateError("TOKEN_UNAVAILABLE", `getToken failed: ${String(err)}`));
          socket.close(4e3, "no token");
        }
        return;
      }
      if (this.socket !== socket) return;
      this.token = token;
    }
    const data = { token };
    const since = this.cursor.position;
    this.askedSince = false;
    if (!this.authenticated && this.resume && this.wantsResume && since !== void 0) {
      data.since = since;
      this.askedSince = true;
    }
    const ref = `auth-${this.nextRef++}`;
    this.authRef = ref;
    this.armAuthTimer(socket);
    socket.send(JSON.stringify({ event: "auth", data, ref }));
  }
  armAuthTimer(socket) {
    this.clearAuthTimer();
    this.authTimer = setTimeout(() => {
      this.authTimer = null;
      if (this.socket === socket) socket.close(4e3, "authentication timed out");
    }, this.authTimeout);
  }
  clearAuthTimer() {
    if (this.authTimer !== null) clearTimeout(this.authTimer);
    this.authTimer = null;
  }
  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object" || typeof frame.event !== "string") return;
    this.fire("frame", frame);
    switch (frame.event) {
      case "auth_success":
        this.authSucceeded(frame);
        return;
      case "ack":
        this.answered(frame.ref, (p) => p.resolve(frame.data ?? {}));
        return;
      case "error":
        this.failed(frame);
        return;
      case "stream_reset": {
        const position = frame.data;
        this.cursor.moveTo(position);
        this.deliver(frame);
        this.fire("reset", { reason: "stream_reset", position });
        return;
      }
      default:
        if (this.cursor.accept(frame.offset)) this.deliver(frame);
    }
  }
  deliver(frame) {
    const meta = frame.offset === void 0 ? {} : { offset: frame.offset };
    this.emit(
      frame.event,
      frame.data,
      meta
    );
  }
  authSucceeded(frame) {
    if (frame.ref !== this.authRef) return;
    this.clearAuthTimer();
    this.authRef = null;
    this.freshTokenTried = false;
    const data = frame.data;
    const reauth = this.authenticated || this.refreshing;
    this.refreshing = false;
    if (reauth) {
      this.flushOutbox();
      return;
    }
    const reconnected = this.hasConnected;
    const resumeAsked = this.wantsResume;
    const recovered = this.askedSince && data.recovered === true;
    if (data.stream === void 0) this.cursor.clear();
    else if (!recovered) this.cursor.moveTo(data.stream);
    this.authenticated = true;
    this.hasConnected = true;
    this.wantsResume = this.resume;
    this.attempt = 0;
    this.currentState = "connected";
    const info = {
      userId: data.user_id,
      name: data.name,
      phone: data.phone ?? null,
      reconnected
    };
    if (data.stream !== void 0) info.stream = data.stream;
    if (data.recovered !== void 0) info.recovered = data.recovered;
    this.userInfo = info;
    this.fire("connected", info);
    if (recovered) {
      this.fire("recovered", { since: this.cursor.position });
    } else if (resumeAsked) {
      const reset = { reason: "not_recovered" };
      if (data.stream !== void 0) reset.position = data.stream;
      this.fire("reset", reset);
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.resolve(info);
    this.flushOutbox();
  }
  failed(frame) {
    const data = frame.data ?? { code: "UNKNOWN", message: "" };
    const error = new GogateError(String(data.code), String(data.message));
    if (frame.ref !== void 0 && frame.ref === this.authRef) {
      this.authFailed(error);
      return;
    }
    const answered = this.answered(frame.ref, (p) => p.reject(error));
    if (data.code === "AUTH_EXPIRED" && this.getToken !== void 0) {
      this.refreshToken();
    } else if (!answered) {
      this.fire("error", error);
    }
  }
  /** The token expired on a live connection: authenticate again with a fresh one. */
  refreshToken() {
    if (this.refreshing || this.socket === null) return;
    this.refreshing = true;
    void this.authenticate(true);
  }
  authFailed(error) {
    this.clearAuthTimer();
    this.authRef = null;
    const socket = this.socket;
    if (socket === null) return;
    if (error.code === "INVALID_PAYLOAD" && this.askedSince) {
      this.cursor.clear();
      void this.authenticate(false);
      return;
    }
    if ((error.code === "AUTH_FAILED" || error.code === "AUTH_EXPIRED") && this.getToken !== void 0 && !this.freshTokenTried) {
      this.freshTokenTried = true;
      void this.authenticate(true);
      return;
    }
    if (error.code === "TOO_MANY_CONNECTIONS" || error.code === "RATE_LIMITED" || error.code === "BACKEND_UNAVAILABLE") {
      this.fire("error", error);
      socket.close(4e3, error.code);
      return;
    }
    this.fire("auth_failed", error);
    this.stop(error, 1e3, "authentication failed");
  }
  /** Settles the request `ref` with `settle`; returns whether there was one. */
  answered(ref, settle) {
    if (ref === void 0) return false;
    const p = this.pending.get(ref);
    if (p === void 0) return false;
    this.pending.delete(ref);
    clearTimeout(p.timer);
    settle(p);
    return true;
  }
  write(ref) {
    const p = this.pending.get(ref);
    if (p === void 0 || this.socket === null) return;
    p.written = true;
    this.socket.send(p.frame);
  }
  flushOutbox() {
    const refs = this.outbox.splice(0);
    for (const ref of refs) this.write(ref);
  }
  forget(ref) {
    this.pending.delete(ref);
    const at = this.outbox.indexOf(ref);
    if (at >= 0) this.outbox.splice(at, 1);
  }
  closed(code, reason) {
    this.socket = null;
    this.clearAuthTimer();
    this.authRef = null;
    this.authenticated = false;
    this.refreshing = false;
    for (const [ref, p] of [...this.pending]) {
      if (!p.written) continue;
      this.answered(ref, (q) => q.reject(new GogateError(
        ClientErrorCode.DISCONNECTED,
        `connection closed (${code}) before the answer to ${q.event}`
      )));
    }
    if (this.currentState === "closed") return;
    if (code === CloseCode.REVOKED) {
      this.stop(new GogateError(ClientErrorCode.CLOSED, `revoked: ${reason}`), code, reason, true);
      return;
    }
    const options = this.reconnectOptions;
    const maxAttempts = options?.maxAttempts ?? Infinity;
    if (options === null || this.attempt >= maxAttempts) {
      this.stop(
        new GogateError(ClientErrorCode.CLOSED, `connection closed (${code})`),
        code,
        reason,
        true
      );
      return;
    }
    const delay = backoffDelay(this.attempt, options);
    this.attempt += 1;
    this.currentState = "waiting";
    this.fire("disconnected", { code, reason, willRetry: true, delay });
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }
  /**
   * Ends the client: no socket, no reconnect, every wait rejected with `error`. `dropped`: the
   * gateway or the network just closed the socket (so `disconnected` is still to be told).
   */
  stop(error, code, reason, dropped = false) {
    if (this.currentState === "closed") return;
    const wasOpen = dropped || this.socket !== null || this.currentState === "waiting";
    this.currentState = "closed";
    this.stoppedBy = error;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.clearAuthTimer();
    const socket = this.socket;
    this.socket = null;
    this.authenticated = false;
    if (socket !== null) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.close(1e3, reason.slice(0, 100));
    }
    for (const ref of [...this.pending.keys()]) this.answered(ref, (p) => p.reject(error));
    this.outbox.length = 0;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(error);
    if (wasOpen) this.fire("disconnected", { code, reason, willRetry: false });
  }
};
function closedError() {
  return new GogateError(ClientErrorCode.CLOSED, "the client is closed");
}

// demo/api.ts
async function get(path) {
  const response = await fetch(`/demo/api/${path}`, { cache: "no-store" });
  if (!response.ok) throw new Error(`GET /demo/api/${path}: HTTP ${response.status}`);
  return await response.json();
}
var demoApi = {
  users: () => get("users"),
  token: async (userId) => (await get(`users/${userId}/token`)).token,
  chats: (userId) => get(`users/${userId}/chats`),
  messages: (userId, chatId) => get(`users/${userId}/chats/${chatId}/messages`)
};

// demo/view.ts
var EMOJIS = ["👍", "❤️", "😂", "🎉", "😮"];
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null) element.append(child);
  }
  return element;
}
function byId(id) {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`the page has no #${id}`);
  return element;
}
function initials(name) {
  return name.split(/\s+/).map((word) => word.charAt(0)).join("").slice(0, 2).toUpperCase();
}
function hue(userId) {
  return userId * 137 % 360;
}
function avatar(user) {
  const element = h("span", { class: "avatar", "aria-hidden": "true" }, initials(user.name));
  element.style.setProperty("--hue", String(hue(user.id)));
  return element;
}
function clock(iso) {
  if (iso === void 0) return "";
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}
function senderName(message) {
  const user = message.user;
  return user?.full_name ?? user?.name ?? `user ${user?.id ?? "?"}`;
}
function renderChats(list, items, current, me, open) {
  list.replaceChildren(...items.map(({ chat, unread, typing }) => {
    const others = chat.members.filter((member) => member.id !== me).map((m) => m.name);
    const subtitle = typing.length > 0 ? `${typing.join(", ")} typing…` : others.join(", ");
    const button = h(
      "button",
      {
        class: "chat-item",
        type: "button",
        "data-chat": chat.id,
        "aria-current": chat.id === current ? "true" : false
      },
      h("span", { class: "chat-title" }, chat.name),
      unread > 0 ? h("span", { class: "badge", title: `${unread} unread` }, String(unread)) : null,
      h("span", { class: typing.length > 0 ? "chat-sub typing-now" : "chat-sub" }, subtitle)
    );
    button.addEventListener("click", () => open(chat.id));
    return button;
  }));
}
function reactionChips(message, me) {
  const byEmoji = /* @__PURE__ */ new Map();
  for (const reaction of message.reactions) {
    const same = byEmoji.get(reaction.emoji) ?? [];
    same.push(reaction);
    byEmoji.set(reaction.emoji, same);
  }
  return h("div", { class: "reactions" }, ...[...byEmoji].map(([emoji, who]) => h("span", {
    class: who.some((r) => r.user_id === me) ? "reaction mine" : "reaction",
    title: who.map((r) => r.name).join(", "),
    "data-emoji": emoji
  }, `${emoji} ${who.length}`)));
}
function receipt(message, me) {
  if (message.user?.id !== me) return null;
  const readers = message.read_by.filter((reader) => reader.user_id !== me);
  return h(
    "div",
    { class: readers.length > 0 ? "receipt seen" : "receipt" },
    readers.length > 0 ? `✓✓ Seen by ${readers.map((r) => r.name.split(" ")[0]).join(", ")}` : "✓ Sent"
  );
}
function messageElement(message, me, actions) {
  const mine = message.user?.id === me;
  const name = senderName(message);
  const bar = h(
    "div",
    { class: "react-bar", role: "group", "aria-label": "React" },
    ...EMOJIS.map((emoji) => {
      const button = h("button", {
        type: "button",
        class: "react",
        title: `React ${emoji}`,
        "data-emoji": emoji
      }, emoji);
      button.addEventListener("click", () => actions.react(message, emoji));
      return button;
    })
  );
  return h(
    "li",
    { class: mine ? "message mine" : "message", "data-id": message.id },
    mine ? null : avatar({ id: message.user?.id ?? 0, name }),
    h(
      "div",
      { class: "bubble" },
      h(
        "div",
        { class: "meta" },
        h("span", { class: "sender" }, mine ? "You" : name),
        h("time", { datetime: message.created_at ?? "" }, clock(message.created_at))
      ),
      h("p", { class: "text" }, message.text ?? message.content ?? ""),
      reactionChips(message, me),
      receipt(message, me)
    ),
    bar
  );
}
function typingText(names) {
  const first = names.map((name) => name.split(" ")[0] ?? name);
  if (first.length === 0) return "";
  if (first.length === 1) return `${first[0]} is typing…`;
  return `${first.slice(0, -1).join(", ")} and ${first[first.length - 1]} are typing…`;
}
var LOG_LINES = 40;
function logEvent(log, event, detail) {
  const line = h(
    "li",
    { class: `event event-${event}` },
    h("time", {}, (/* @__PURE__ */ new Date()).toLocaleTimeString([], { hour12: false })),
    h("code", {}, event),
    h("span", {}, detail)
  );
  log.prepend(line);
  while (log.childElementCount > LOG_LINES) log.lastElementChild?.remove();
}
function userOption(user, selected) {
  return h("option", { value: user.id, selected }, user.name);
}

// demo/main.ts
var TYPING_REPEAT = 3e3;
var TYPING_IDLE = 4e3;
var TYPING_SHOWN = 6e3;
var READ_BATCH = 100;
function summary(frame) {
  const data = frame.data ?? {};
  switch (frame.event) {
    case "auth_success":
      return `${String(data.name)} (user ${String(data.user_id)})`;
    case "new_message":
      return `${senderName(data)}: ${String(data.text ?? "")}`;
    case "user_typing":
      return `${String(data.name)} ${data.is_typing === true ? "is typing" : "stopped typing"}`;
    case "new_reaction":
      return `${String(data.name)} ${String(data.emoji)} on message ${String(data.message_id)}`;
    case "message_read":
      return `${String(data.name)} read ${data.message_ids.join(", ")}`;
    case "ack":
      return `ref ${String(frame.ref)}`;
    case "error":
      return `${String(data.code)}: ${String(data.message)}`;
    default:
      return JSON.stringify(data).slice(0, 120);
  }
}
var DemoPage = class {
  constructor(me, chats) {
    this.me = me;
    this.chats = chats;
    this.current = null;
    /** The open chat's messages by id. */
    this.messages = /* @__PURE__ */ new Map();
    this.unread = /* @__PURE__ */ new Map();
    /** Who is typing, by chat and user. */
    this.typists = /* @__PURE__ */ new Map();
    this.typingChat = null;
    this.typingSentAt = 0;
    this.typingIdle = null;
    this.list = byId("messages");
    this.typingLine = byId("typing");
    this.chatList = byId("chats");
    this.state = byId("state");
    this.notice = byId("notice");
    this.input = byId("text");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.client = new GogateClient({
      url: `${scheme}://${location.host}/ws`,
      getToken: () => demoApi.token(me.id),
      reconnect: { initialDelay: 500, maxDelay: 5e3 }
    });
    this.listen();
    byId("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.send();
    });
    this.input.addEventListener("input", () => this.keyPressed());
    document.addEventListener("visibilitychange", () => this.markRead());
  }
  async start(chatId) {
    this.renderChatList();
    await this.client.connect();
    const first = this.chats.find((chat) => chat.id === chatId) ?? this.chats[0];
    if (first !== void 0) await this.open(first.id);
  }
  // --- what the gateway sends ---------------------------------------------------------------
  listen() {
    const client = this.client;
    const log = byId("log");
    client.on("frame", (frame) => logEvent(log, frame.event, summary(frame)));
    client.on("connecting", ({ attempt }) => this.showState("connecting", attempt > 0 ? `connecting (attempt ${attempt + 1})…` : "connecting…"));
    client.on("connected", ({ name }) => this.showState("connected", `online as ${name}`));
    client.on("disconnected", ({ code, willRetry, delay }) => this.showState(
      willRetry ? "waiting" : "closed",
      willRetry ? `offline (${code}), retrying in ${Math.ceil((delay ?? 0) / 1e3)} s` : `offline (${code})`
    ));
    client.on("auth_failed", (error) => this.showState("closed", `refused: ${error.code}`));
    client.on("error", (error) => this.say(`${error.code}: ${error.message}`));
    client.on("reset", () => {
      if (this.current !== null) void this.open(this.current);
    });
    client.on("new_message", (message) => this.received(message));
    client.on("user_typing", ({ chat_id, user_id, name, is_typing }) => this.typed(chat_id, user_id, name, is_typing));
    client.on("new_reaction", ({ message_id, user_id, name, emoji }) => {
      const message = this.messages.get(message_id);
      if (message === void 0) return;
      if (!message.reactions.some((r) => r.user_id === user_id && r.emoji === emoji)) {
        message.reactions.push({ user_id, name, emoji });
      }
      this.show(message);
    });
    client.on("message_read", ({ message_ids, user_id, name }) => {
      for (const id of message_ids) {
        const message = this.messages.get(id);
        if (message === void 0 || message.read_by.some((r) => r.user_id === user_id)) continue;
        message.read_by.push({ user_id, name });
        this.show(message);
      }
    });
  }
  received(data) {
    const message = { ...data, reactions: [], read_by: [] };
    const sender = message.user?.id;
    if (sender !== void 0) this.typed(message.chat_id, sender, "", false);
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
  typed(chatId, userId, name, isTyping) {
    if (userId === this.me.id) return;
    const typists = this.typists.get(chatId) ?? /* @__PURE__ */ new Map();
    this.typists.set(chatId, typists);
    const before = typists.get(userId);
    if (before !== void 0) clearTimeout(before.timer);
    if (isTyping) {
      const timer = setTimeout(() => this.typed(chatId, userId, name, false), TYPING_SHOWN);
      typists.set(userId, { name, timer });
    } else if (before === void 0) {
      return;
    } else {
      typists.delete(userId);
    }
    this.renderTyping();
    this.renderChatList();
  }
  // --- what the user does -------------------------------------------------------------------
  async open(chatId) {
    this.current = chatId;
    this.messages = /* @__PURE__ */ new Map();
    this.unread.delete(chatId);
    const chat = this.chats.find((c) => c.id === chatId);
    byId("chat-name").textContent = chat?.name ?? `Chat ${chatId}`;
    byId("chat-members").replaceChildren(...(chat?.members ?? []).map((member) => h("span", { class: "member" }, avatar(member), member.id === this.me.id ? "You" : member.name)));
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
  async send() {
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
  keyPressed() {
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
  stopTyping() {
    if (this.typingIdle !== null) clearTimeout(this.typingIdle);
    this.typingIdle = null;
    if (this.typingChat !== null) this.client.typing(this.typingChat, false);
    this.typingChat = null;
    this.typingSentAt = 0;
  }
  react(message, emoji) {
    this.client.addReaction({ message_id: message.id, emoji, chat_id: message.chat_id }).catch((err) => this.say(err instanceof GogateError ? `Reaction not added: ${err.code}` : String(err)));
  }
  /** Tells the gateway which messages of others the user has now seen (while the tab shows). */
  markRead() {
    const chatId = this.current;
    if (chatId === null || document.visibilityState !== "visible") return;
    const unseen = [...this.messages.values()].filter((m) => m.user?.id !== this.me.id && !m.read_by.some((r) => r.user_id === this.me.id));
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
  show(message) {
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 60;
    const element = messageElement(message, this.me.id, {
      react: (m, emoji) => this.react(m, emoji)
    });
    const old = this.list.querySelector(`[data-id="${message.id}"]`);
    if (old !== null) {
      old.replaceWith(element);
      return;
    }
    const later = Array.from(this.list.children).find((li) => Number(li.dataset.id) > message.id);
    this.list.insertBefore(element, later ?? null);
    if (atBottom || message.user?.id === this.me.id) this.list.scrollTop = this.list.scrollHeight;
  }
  renderTyping() {
    const typists = this.current === null ? void 0 : this.typists.get(this.current);
    const text = typingText([...typists?.values() ?? []].map((t) => t.name));
    this.typingLine.textContent = text;
    this.typingLine.classList.toggle("active", text !== "");
  }
  renderChatList() {
    renderChats(this.chatList, this.chats.map((chat) => ({
      chat,
      unread: this.unread.get(chat.id) ?? 0,
      typing: [...this.typists.get(chat.id)?.values() ?? []].map((t) => t.name.split(" ")[0] ?? t.name)
    })), this.current, this.me.id, (chatId) => void this.open(chatId));
  }
  showState(state, text) {
    this.state.dataset.state = state;
    this.state.textContent = text;
  }
  say(text) {
    this.notice.textContent = text;
  }
};
function landing(users) {
  byId("landing").hidden = false;
  byId("who").replaceChildren(...users.map((user) => h(
    "li",
    {},
    h(
      "a",
      { href: `?user=${user.id}`, class: "pick", "data-user": user.id },
      avatar(user),
      user.name
    )
  )));
}
async function main() {
  const users = await demoApi.users();
  const params = new URLSearchParams(location.search);
  const me = users.find((user) => String(user.id) === params.get("user"));
  const select = byId("user");
  select.replaceChildren(...me === void 0 ? [h("option", { value: "" }, "choose a user…")] : [], ...users.map((user) => userOption(user, user.id === me?.id)));
  select.addEventListener("change", () => {
    if (select.value !== "") location.search = `?user=${select.value}`;
  });
  if (me === void 0) {
    landing(users);
    return;
  }
  document.title = `${me.name} · gogate demo`;
  const chats = await demoApi.chats(me.id);
  const partner = users.find((user) => user.id !== me.id && chats.some((chat) => chat.members.some((member) => member.id === user.id)));
  const second = byId("second-tab");
  if (partner !== void 0) {
    second.href = `?user=${partner.id}`;
    second.textContent = `Open a second tab as ${partner.name}`;
    second.hidden = false;
  }
  byId("app").hidden = false;
  const chatParam = Number(params.get("chat"));
  await new DemoPage(me, chats).start(Number.isInteger(chatParam) ? chatParam : null);
}
main().catch((err) => {
  const notice = document.getElementById("fatal");
  if (notice !== null) {
    notice.hidden = false;
    notice.textContent = `The demo could not start: ${String(err)}`;
  }
});
