/**
 * The gogate client: one WebSocket to the gateway, authenticated, kept alive across network
 * failures and gateway restarts, with requests answered as promises and the user's stream
 * resumed where it stopped.
 *
 * Lifecycle of one connection: `connecting` (socket opening) → `authenticating` (`auth` sent)
 * → `connected` (`auth_success` received) → `disconnected` (socket closed), then either a new
 * attempt after a backoff delay or the end (`closed`): the application called `close()`, the
 * backend revoked the user (close code 4001), or the gateway refused every token the
 * application could give.
 */

import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { ClientErrorCode, GogateError } from "./errors.js";
import {
  CloseCode,
  type AckDataMap,
  type AuthData,
  type AuthSuccessData,
  type ClientEventMap,
  type ErrorData,
  type Frame,
  type Ref,
  type RequestEvent,
  type ServerEventMap,
  type StreamPosition,
} from "./protocol.js";
import { StreamCursor } from "./stream.js";

/** A function that gives a token: a string, or a promise of one (e.g. from a refresh call). */
export type TokenSource = () => string | Promise<string>;

export interface ClientOptions {
  /** The gateway's WebSocket URL, e.g. `wss://chat.example.com/ws`. */
  url: string;
  /** The token of the first `auth`; without it, `getToken()` is asked. */
  token?: string;
  /**
   * Gives a fresh token: called when the gateway says the token expired (`AUTH_EXPIRED`, then
   * the client re-authenticates on the same connection), once when the gateway refuses the
   * current token (`AUTH_FAILED`), and when no `token` was given.
   */
  getToken?: TokenSource;
  /** Reconnect after an unexpected close: `true` (default), `false`, or backoff settings. */
  reconnect?: boolean | ReconnectOptions;
  /** Milliseconds a request waits for its `ack` or `error` (default 10000). */
  requestTimeout?: number;
  /** Milliseconds the gateway has to answer `auth` before the socket is dropped (default 10000). */
  authTimeout?: number;
  /** Resume the user's stream after a reconnect (default true). */
  resume?: boolean;
  /** A stream position the application kept (e.g. across a page reload) to resume from. */
  since?: StreamPosition;
  /** The WebSocket constructor, where there is no global one. */
  WebSocket?: WebSocketConstructor;
}

export interface ReconnectOptions extends BackoffOptions {
  /** Attempts in a row before giving up (default: never give up). */
  maxAttempts?: number;
}

export type WebSocketConstructor = new (url: string) => WebSocket;

export type ConnectionState =
  | "idle" | "connecting" | "authenticating" | "connected" | "waiting" | "closed";

/** The user the gateway authenticated, and where the connection stands in the user's stream. */
export interface ConnectedInfo {
  userId: number;
  name: string;
  phone: string | null;
  /** The user's stream as the gateway reported it; absent when the gateway keeps none. */
  stream?: StreamPosition;
  /** Whether every event missed since the last connection follows (when resuming was asked). */
  recovered?: boolean;
  /** Whether this is a reconnection of the client (not its first connection). */
  reconnected: boolean;
}

export interface DisconnectedInfo {
  /** The close code (1006: the connection dropped without one). */
  code: number;
  reason: string;
  /** Whether the client will try again. */
  willRetry: boolean;
  /** Milliseconds before the next attempt, when it will. */
  delay?: number;
}

export interface ResetInfo {
  /**
   * `not_recovered`: after a reconnect the gateway could not replay every missed event;
   * `stream_reset`: the gateway started the user's stream over while connected.
   */
  reason: "not_recovered" | "stream_reset";
  /** The new position, when the gateway keeps a stream. */
  position?: StreamPosition;
}

/** Extra data of a delivered event: its position in the user's stream. */
export interface EventMeta {
  offset?: number;
}

/** The events of the client itself, beside the gateway's. */
export interface LifecycleEvents {
  connecting: [info: { attempt: number }];
  connected: [info: ConnectedInfo];
  disconnected: [info: DisconnectedInfo];
  /** Resumed: every event missed while disconnected is about to be delivered, in order. */
  recovered: [info: { since: StreamPosition }];
  /** Events may have been missed: reload the application's state from the REST API. */
  reset: [info: ResetInfo];
  /** The gateway refused the token and no fresh one helped: the client stopped. */
  auth_failed: [error: GogateError];
  /** An `error` from the gateway that answers no request of the application. */
  error: [error: GogateError];
  /** Every frame the gateway sent, before any other handling (for logging and debugging). */
  frame: [frame: Frame];
}

/** Handler arguments of the gateway's events, `Extra` naming events published by the backend. */
export type ServerEvents<Extra> = {
  [K in keyof (ServerEventMap & Extra)]: [data: (ServerEventMap & Extra)[K], meta: EventMeta];
};

export type ClientEvents<Extra = unknown> = LifecycleEvents & ServerEvents<Extra>;

interface Pending {
  event: string;
  frame: string;
  written: boolean;
  timer: ReturnType<typeof setTimeout>;
  resolve: (data: unknown) => void;
  reject: (error: GogateError) => void;
}

const NO_EXTRA_EVENTS = {} as const;

/**
 * A client of the gogate gateway.
 *
 * ```ts
 * const client = new GogateClient({ url, token, getToken: refreshToken });
 * client.on("new_message", (message) => render(message));
 * client.on("reset", () => reloadFromRestApi());
 * await client.connect();
 * const { message_id } = await client.sendMessage({ chat_id: 1, text: "Hello" });
 * ```
 *
 * `Extra` declares the events the backend publishes through the gateway, by name and data.
 */
export class GogateClient<Extra extends object = typeof NO_EXTRA_EVENTS>
  extends Emitter<ClientEvents<Extra>> {
  private readonly url: string;
  private readonly getToken: TokenSource | undefined;
  private readonly reconnectOptions: ReconnectOptions | null;
  private readonly requestTimeout: number;
  private readonly authTimeout: number;
  private readonly resume: boolean;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly cursor: StreamCursor;

  private token: string | undefined;
  private socket: WebSocket | null = null;
  private currentState: ConnectionState = "idle";
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private authTimer: ReturnType<typeof setTimeout> | null = null;
  private authRef: Ref | null = null;
  private authenticated = false;
  private refreshing = false;
  private freshTokenTried = false;
  private askedSince = false;
  private wantsResume: boolean;
  private hasConnected = false;
  private stoppedBy: GogateError | null = null;
  private nextRef = 1;
  private readonly pending = new Map<Ref, Pending>();
  private readonly outbox: Ref[] = [];
  private userInfo: ConnectedInfo | null = null;
  private waiters: { resolve: (info: ConnectedInfo) => void; reject: (e: GogateError) => void }[] =
    [];

  constructor(options: ClientOptions) {
    super();
    this.url = options.url;
    this.token = options.token;
    this.getToken = options.getToken;
    const reconnect = options.reconnect ?? true;
    this.reconnectOptions = reconnect === false ? null : reconnect === true ? {} : reconnect;
    this.requestTimeout = options.requestTimeout ?? 10000;
    this.authTimeout = options.authTimeout ?? 10000;
    this.resume = options.resume ?? true;
    this.cursor = new StreamCursor(options.since);
    this.wantsResume = this.resume && options.since !== undefined;
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (impl === undefined) {
      throw new TypeError("no WebSocket implementation: pass one as options.WebSocket");
    }
    this.WebSocketImpl = impl;
    if (this.token === undefined && this.getToken === undefined) {
      throw new TypeError("a token or a getToken function is required");
    }
  }

  /** Where the connection stands. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** The authenticated user of the current connection, or `null` while not connected. */
  get user(): ConnectedInfo | null {
    return this.authenticated ? this.userInfo : null;
  }

  /**
   * The last stream position processed, to keep (e.g. in `sessionStorage`) and give back as
   * `since` to a later client; `undefined` when the gateway keeps no stream.
   */
  get position(): StreamPosition | undefined {
    return this.cursor.position;
  }

  /**
   * Opens the connection (once; later calls return the same wait). Resolves on the next
   * `connected`; rejects if the client stops for good before (closed, revoked, token refused).
   * Failed attempts before that are retried with backoff and do not reject.
   */
  connect(): Promise<ConnectedInfo> {
    if (this.currentState === "closed") {
      return Promise.reject(this.stoppedBy ?? closedError());
    }
    const wait = new Promise<ConnectedInfo>((resolve, reject) => {
      if (this.authenticated && this.userInfo !== null) resolve(this.userInfo);
      else this.waiters.push({ resolve, reject });
    });
    if (this.currentState === "idle") this.open();
    return wait;
  }

  /**
   * Closes the connection for good: no reconnect. Requests still waiting reject with `CLOSED`.
   */
  close(): void {
    this.stop(closedError(), 1000, "closed by the application");
  }

  /**
   * Sends a request and resolves with the data of its `ack`; rejects with a
   * {@link GogateError} carrying the gateway's error code, or `TIMEOUT`, `DISCONNECTED`,
   * `CLOSED`. A request made while the client is not connected is sent once it is (within the
   * timeout).
   */
  send<E extends RequestEvent>(event: E, data: ClientEventMap[E],
                               options: { timeout?: number } = {}): Promise<AckDataMap[E]> {
    if (this.currentState === "closed") {
      return Promise.reject(this.stoppedBy ?? closedError());
    }
    const ref = this.nextRef++;
    const frame = JSON.stringify({ event, data, ref });
    return new Promise<AckDataMap[E]>((resolve, reject) => {
      const timeout = options.timeout ?? this.requestTimeout;
      const timer = setTimeout(() => {
        this.forget(ref);
        reject(new GogateError(ClientErrorCode.TIMEOUT, `no answer to ${event} within ${timeout} ms`));
      }, timeout);
      this.pending.set(ref, {
        event, frame, written: false, timer,
        resolve: resolve as (data: unknown) => void, reject,
      });
      if (this.authenticated && !this.refreshing) this.write(ref);
      else this.outbox.push(ref);
    });
  }

  /**
   * Sends an event without asking for an answer (for `typing`, which is worth nothing late):
   * returns whether it was written, which it is only while connected.
   */
  notify<E extends RequestEvent>(event: E, data: ClientEventMap[E]): boolean {
    if (!this.authenticated || this.refreshing || this.socket === null) return false;
    this.socket.send(JSON.stringify({ event, data }));
    return true;
  }

  /** Posts a message; resolves with its id once the backend accepted it. */
  sendMessage(data: ClientEventMap["send_message"],
              options?: { timeout?: number }): Promise<{ message_id: number }> {
    return this.send("send_message", data, options);
  }

  /** Tells the chat's members whether the user is typing (no answer, dropped when offline). */
  typing(chatId: number, isTyping: boolean): boolean {
    return this.notify("typing", { chat_id: chatId, is_typing: isTyping });
  }

  addReaction(data: ClientEventMap["add_reaction"],
              options?: { timeout?: number }): Promise<Record<string, never>> {
    return this.send("add_reaction", data, options);
  }

  markRead(data: ClientEventMap["mark_read"],
           options?: { timeout?: number }): Promise<Record<string, never>> {
    return this.send("mark_read", data, options);
  }

  /** Emits one of the client's own events. */
  private fire<K extends keyof LifecycleEvents>(event: K, ...args: LifecycleEvents[K]): void {
    (this.emit as (event: K, ...args: LifecycleEvents[K]) => void)(event, ...args);
  }

  // --- the socket ---------------------------------------------------------------------------

  private open(): void {
    this.reconnectTimer = null;
    this.currentState = "connecting";
    this.fire("connecting", { attempt: this.attempt });
    let socket: WebSocket;
    try {
      socket = new this.WebSocketImpl(this.url);
    } catch (err) {
      // An unusable URL fails the same way every time: stop rather than retry.
      this.stop(new GogateError(ClientErrorCode.CLOSED, `cannot open ${this.url}: ${String(err)}`),
                1000, "");
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket === socket) void this.authenticate(false);
    };
    socket.onmessage = (ev: MessageEvent) => {
      if (this.socket === socket && typeof ev.data === "string") this.receive(ev.data);
    };
    socket.onclose = (ev: CloseEvent) => {
      if (this.socket === socket) this.closed(ev.code, ev.reason);
    };
  }

  /** Sends `auth`: with the current token, or a fresh one from `getToken()`. */
  private async authenticate(fresh: boolean): Promise<void> {
    const socket = this.socket;
    if (socket === null) return;
    if (!this.authenticated) this.currentState = "authenticating";
    let token = this.token;
    if (fresh || token === undefined) {
      if (this.getToken === undefined) return;
      try {
        token = await this.getToken();
      } catch (err) {
        if (this.socket === socket) {
          this.fire("error", new GogateError("TOKEN_UNAVAILABLE", `getToken failed: ${String(err)}`));
          socket.close(4000, "no token");
        }
        return;
      }
      if (this.socket !== socket) return;
      this.token = token;
    }
    const data: AuthData = { token };
    const since = this.cursor.position;
    this.askedSince = false;
    if (!this.authenticated && this.resume && this.wantsResume && since !== undefined) {
      data.since = since;
      this.askedSince = true;
    }
    const ref = `auth-${this.nextRef++}`;
    this.authRef = ref;
    this.armAuthTimer(socket);
    socket.send(JSON.stringify({ event: "auth", data, ref }));
  }

  private armAuthTimer(socket: WebSocket): void {
    this.clearAuthTimer();
    this.authTimer = setTimeout(() => {
      this.authTimer = null;
      if (this.socket === socket) socket.close(4000, "authentication timed out");
    }, this.authTimeout);
  }

  private clearAuthTimer(): void {
    if (this.authTimer !== null) clearTimeout(this.authTimer);
    this.authTimer = null;
  }

  private receive(text: string): void {
    let frame: Frame;
    try {
      frame = JSON.parse(text) as Frame;
    } catch {
      return; // the gateway sends JSON only; anything else is not for this client
    }
    if (frame === null || typeof frame !== "object" || typeof frame.event !== "string") return;
    this.fire("frame", frame);
    switch (frame.event) {
      case "auth_success":
        this.authSucceeded(frame as Frame<"auth_success", AuthSuccessData>);
        return;
      case "ack":
        this.answered(frame.ref, (p) => p.resolve(frame.data ?? {}));
        return;
      case "error":
        this.failed(frame as Frame<"error", ErrorData>);
        return;
      case "stream_reset": {
        const position = frame.data as StreamPosition;
        this.cursor.moveTo(position);
        this.deliver(frame);
        this.fire("reset", { reason: "stream_reset", position });
        return;
      }
      default:
        if (this.cursor.accept(frame.offset)) this.deliver(frame);
    }
  }

  private deliver(frame: Frame): void {
    const meta: EventMeta = frame.offset === undefined ? {} : { offset: frame.offset };
    // Events the backend publishes have names only the application knows.
    (this.emit as (event: string, data: unknown, meta: EventMeta) => void)(
      frame.event, frame.data, meta);
  }

  private authSucceeded(frame: Frame<"auth_success", AuthSuccessData>): void {
    if (frame.ref !== this.authRef) return;
    this.clearAuthTimer();
    this.authRef = null;
    this.freshTokenTried = false;
    const data = frame.data;
    const reauth = this.authenticated || this.refreshing;
    this.refreshing = false;
    if (reauth) {
      // A fresh token on a live connection: the stream goes on, nothing was missed.
      this.flushOutbox();
      return;
    }
    const reconnected = this.hasConnected;
    const resumeAsked = this.wantsResume;
    const recovered = this.askedSince && data.recovered === true;
    if (data.stream === undefined) this.cursor.clear();
    else if (!recovered) this.cursor.moveTo(data.stream);
    this.authenticated = true;
    this.hasConnected = true;
    this.wantsResume = this.resume;
    this.attempt = 0;
    this.currentState = "connected";
    const info: ConnectedInfo = {
      userId: data.user_id, name: data.name, phone: data.phone ?? null, reconnected,
    };
    if (data.stream !== undefined) info.stream = data.stream;
    if (data.recovered !== undefined) info.recovered = data.recovered;
    this.userInfo = info;
    this.fire("connected", info);
    if (recovered) {
      this.fire("recovered", { since: this.cursor.position as StreamPosition });
    } else if (resumeAsked) {
      const reset: ResetInfo = { reason: "not_recovered" };
      if (data.stream !== undefined) reset.position = data.stream;
      this.fire("reset", reset);
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.resolve(info);
    this.flushOutbox();
  }

  private failed(frame: Frame<"error", ErrorData>): void {
    const data = frame.data ?? { code: "UNKNOWN", message: "" };
    const error = new GogateError(String(data.code), String(data.message));
    if (frame.ref !== undefined && frame.ref === this.authRef) {
      this.authFailed(error);
      return;
    }
    const answered = this.answered(frame.ref, (p) => p.reject(error));
    if (data.code === "AUTH_EXPIRED" && this.getToken !== undefined) {
      this.refreshToken();
    } else if (!answered) {
      this.fire("error", error);
    }
  }

  /** The token expired on a live connection: authenticate again with a fresh one. */
  private refreshToken(): void {
    if (this.refreshing || this.socket === null) return;
    this.refreshing = true;
    void this.authenticate(true);
  }

  private authFailed(error: GogateError): void {
    this.clearAuthTimer();
    this.authRef = null;
    const socket = this.socket;
    if (socket === null) return;
    if (error.code === "INVALID_PAYLOAD" && this.askedSince) {
      // A gateway that cannot read the stream position: authenticate without resuming.
      this.cursor.clear();
      void this.authenticate(false);
      return;
    }
    if ((error.code === "AUTH_FAILED" || error.code === "AUTH_EXPIRED")
        && this.getToken !== undefined && !this.freshTokenTried) {
      this.freshTokenTried = true;
      void this.authenticate(true);
      return;
    }
    if (error.code === "TOO_MANY_CONNECTIONS" || error.code === "RATE_LIMITED"
        || error.code === "BACKEND_UNAVAILABLE") {
      // Worth another try later: the gateway closes (or this client drops) the socket.
      this.fire("error", error);
      socket.close(4000, error.code);
      return;
    }
    this.fire("auth_failed", error);
    this.stop(error, 1000, "authentication failed");
  }

  /** Settles the request `ref` with `settle`; returns whether there was one. */
  private answered(ref: Ref | undefined, settle: (p: Pending) => void): boolean {
    if (ref === undefined) return false;
    const p = this.pending.get(ref);
    if (p === undefined) return false;
    this.pending.delete(ref);
    clearTimeout(p.timer);
    settle(p);
    return true;
  }

  private write(ref: Ref): void {
    const p = this.pending.get(ref);
    if (p === undefined || this.socket === null) return;
    p.written = true;
    this.socket.send(p.frame);
  }

  private flushOutbox(): void {
    const refs = this.outbox.splice(0);
    for (const ref of refs) this.write(ref);
  }

  private forget(ref: Ref): void {
    this.pending.delete(ref);
    const at = this.outbox.indexOf(ref);
    if (at >= 0) this.outbox.splice(at, 1);
  }

  private closed(code: number, reason: string): void {
    this.socket = null;
    this.clearAuthTimer();
    this.authRef = null;
    this.authenticated = false;
    this.refreshing = false;
    // Requests written on this connection may or may not have taken effect: the application
    // decides; requests not yet written wait for the next connection.
    for (const [ref, p] of [...this.pending]) {
      if (!p.written) continue;
      this.answered(ref, (q) => q.reject(new GogateError(
        ClientErrorCode.DISCONNECTED, `connection closed (${code}) before the answer to ${q.event}`)));
    }
    if (this.currentState === "closed") return;
    if (code === CloseCode.REVOKED) {
      this.stop(new GogateError(ClientErrorCode.CLOSED, `revoked: ${reason}`), code, reason, true);
      return;
    }
    const options = this.reconnectOptions;
    const maxAttempts = options?.maxAttempts ?? Infinity;
    if (options === null || this.attempt >= maxAttempts) {
      this.stop(new GogateError(ClientErrorCode.CLOSED, `connection closed (${code})`), code, reason,
                true);
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
  private stop(error: GogateError, code: number, reason: string, dropped = false): void {
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
      socket.close(1000, reason.slice(0, 100));
    }
    for (const ref of [...this.pending.keys()]) this.answered(ref, (p) => p.reject(error));
    this.outbox.length = 0;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(error);
    if (wasOpen) this.fire("disconnected", { code, reason, willRetry: false });
  }
}

function closedError(): GogateError {
  return new GogateError(ClientErrorCode.CLOSED, "the client is closed");
}
