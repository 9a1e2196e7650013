/**
 * What the demo page reads from the gateway in development mode, under `/demo/api/` on the
 * page's own origin: the demo users, a fresh token, a user's chats and a chat's latest messages.
 */

import type { Message } from "../src/index.js";

export interface DemoUser {
  id: number;
  name: string;
}

export interface DemoChat {
  id: number;
  name: string;
  members: DemoUser[];
}

export interface Reaction {
  user_id: number;
  name: string;
  emoji: string;
}

export interface Reader {
  user_id: number;
  name: string;
}

/** A message as the page keeps it: the gateway's `new_message`, with reactions and readers. */
export interface ChatMessage extends Message {
  reactions: Reaction[];
  read_by: Reader[];
}

async function get<T>(path: string): Promise<T> {
  const response = await fetch(`/demo/api/${path}`, { cache: "no-store" });
  if (!response.ok) throw new Error(`GET /demo/api/${path}: HTTP ${response.status}`);
  return (await response.json()) as T;
}

export const demoApi = {
  users: (): Promise<DemoUser[]> => get("users"),
  token: async (userId: number): Promise<string> =>
    (await get<{ token: string }>(`users/${userId}/token`)).token,
  chats: (userId: number): Promise<DemoChat[]> => get(`users/${userId}/chats`),
  messages: (userId: number, chatId: number): Promise<ChatMessage[]> =>
    get(`users/${userId}/chats/${chatId}/messages`),
};
