/**
 * The demo page's DOM: the chat list, the messages with their reactions and read receipts, the
 * typing line and the log of events from the gateway. Text from users only ever goes in as
 * text nodes.
 */

import type { ChatMessage, DemoChat, DemoUser, Reaction } from "./api.js";

/** The reactions offered under every message. */
export const EMOJIS = ["👍", "❤️", "😂", "🎉", "😮"] as const;

type Attributes = Record<string, string | number | boolean>;

/** An element with attributes (`false` leaves one out) and children (strings become text). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attributes: Attributes = {}, ...children: (Node | string | null)[]
): HTMLElementTagNameMap[K] {
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

/** An element of the page by id; the page's markup has every one of them. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`the page has no #${id}`);
  return element as T;
}

function initials(name: string): string {
  return name.split(/\s+/).map((word) => word.charAt(0)).join("").slice(0, 2).toUpperCase();
}

/** A steady colour per user, so each sender is recognisable at a glance. */
function hue(userId: number): number {
  return (userId * 137) % 360;
}

export function avatar(user: { id: number; name: string }): HTMLElement {
  const element = h("span", { class: "avatar", "aria-hidden": "true" }, initials(user.name));
  element.style.setProperty("--hue", String(hue(user.id)));
  return element;
}

function clock(iso: string | undefined): string {
  if (iso === undefined) return "";
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? ""
    : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

export function senderName(message: ChatMessage): string {
  const user = message.user;
  return user?.full_name ?? user?.name ?? `user ${user?.id ?? "?"}`;
}

// --- the chat list -------------------------------------------------------------------------

export interface ChatListItem {
  chat: DemoChat;
  unread: number;
  typing: string[];
}

export function renderChats(list: HTMLElement, items: ChatListItem[], current: number | null,
                            me: number, open: (chatId: number) => void): void {
  list.replaceChildren(...items.map(({ chat, unread, typing }) => {
    const others = chat.members.filter((member) => member.id !== me).map((m) => m.name);
    const subtitle = typing.length > 0 ? `${typing.join(", ")} typing…` : others.join(", ");
    const button = h("button", {
      class: "chat-item", type: "button", "data-chat": chat.id,
      "aria-current": chat.id === current ? "true" : false,
    },
    h("span", { class: "chat-title" }, chat.name),
    unread > 0 ? h("span", { class: "badge", title: `${unread} unread` }, String(unread)) : null,
    h("span", { class: typing.length > 0 ? "chat-sub typing-now" : "chat-sub" }, subtitle));
    button.addEventListener("click", () => open(chat.id));
    return button;
  }));
}

// --- messages -----------------------------------------------------------------------------

export interface MessageActions {
  react: (message: ChatMessage, emoji: string) => void;
}

function reactionChips(message: ChatMessage, me: number): HTMLElement {
  const byEmoji = new Map<string, Reaction[]>();
  for (const reaction of message.reactions) {
    const same = byEmoji.get(reaction.emoji) ?? [];
    same.push(reaction);
    byEmoji.set(reaction.emoji, same);
  }
  return h("div", { class: "reactions" }, ...[...byEmoji].map(([emoji, who]) => h("span", {
    class: who.some((r) => r.user_id === me) ? "reaction mine" : "reaction",
    title: who.map((r) => r.name).join(", "),
    "data-emoji": emoji,
  }, `${emoji} ${who.length}`)));
}

function receipt(message: ChatMessage, me: number): HTMLElement | null {
  if (message.user?.id !== me) return null;
  const readers = message.read_by.filter((reader) => reader.user_id !== me);
  return h("div", { class: readers.length > 0 ? "receipt seen" : "receipt" },
    readers.length > 0 ? `✓✓ Seen by ${readers.map((r) => r.name.split(" ")[0]).join(", ")}`
      : "✓ Sent");
}

/** One message: sender, text, time, reactions, the reaction bar and, for one's own, receipts. */
export function messageElement(message: ChatMessage, me: number,
                               actions: MessageActions): HTMLElement {
  const mine = message.user?.id === me;
  const name = senderName(message);
  const bar = h("div", { class: "react-bar", role: "group", "aria-label": "React" },
    ...EMOJIS.map((emoji) => {
      const button = h("button", { type: "button", class: "react", title: `React ${emoji}`,
                                   "data-emoji": emoji }, emoji);
      button.addEventListener("click", () => actions.react(message, emoji));
      return button;
    }));
  return h("li", { class: mine ? "message mine" : "message", "data-id": message.id },
    mine ? null : avatar({ id: message.user?.id ?? 0, name }),
    h("div", { class: "bubble" },
      h("div", { class: "meta" },
        h("span", { class: "sender" }, mine ? "You" : name),
        h("time", { datetime: message.created_at ?? "" }, clock(message.created_at))),
      h("p", { class: "text" }, message.text ?? message.content ?? ""),
      reactionChips(message, me),
      receipt(message, me)),
    bar);
}

/** The typing line of the open chat: "Jane is typing…", "Jane and Carol are typing…". */
export function typingText(names: string[]): string {
  const first = names.map((name) => name.split(" ")[0] ?? name);
  if (first.length === 0) return "";
  if (first.length === 1) return `${first[0]} is typing…`;
  return `${first.slice(0, -1).join(", ")} and ${first[first.length - 1]} are typing…`;
}

// --- the event log ------------------------------------------------------------------------

const LOG_LINES = 40;

/** Adds a line to the log of what the gateway sent, newest on top. */
export function logEvent(log: HTMLElement, event: string, detail: string): void {
  const line = h("li", { class: `event event-${event}` },
    h("time", {}, new Date().toLocaleTimeString([], { hour12: false })),
    h("code", {}, event), h("span", {}, detail));
  log.prepend(line);
  while (log.childElementCount > LOG_LINES) log.lastElementChild?.remove();
}

export function userOption(user: DemoUser, selected: boolean): HTMLOptionElement {
  return h("option", { value: user.id, selected }, user.name);
}
