/**
 * The gogate wire protocol as TypeScript types.
 *
 * Every frame, in either direction, is one JSON object `{"event", "data"}`; a client event may
 * carry a top-level `ref` that the gateway copies into the `ack` or `error` answering it, and
 * the events of a user's stream carry a top-level `offset` (their position in the stream, which
 * lets a client resume after a reconnect without losing or repeating an event).
 */

/** A request reference: the gateway copies it into the answer. */
export type Ref = string | number;

/** A position in a user's stream: its epoch and the offset of an event in it. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

// --- client → server ------------------------------------------------------------------------

export interface AuthData {
  token: string;
  /** The last stream position the client processed; asks the gateway to replay what followed. */
  since?: StreamPosition;
}

export interface SendMessageData {
  chat_id: number;
  text?: string;
  reply_to_id?: number;
  attachment_ids?: number[];
}

export interface TypingData {
  chat_id: number;
  is_typing: boolean;
}

export interface AddReactionData {
  message_id: number;
  emoji: string;
  /** The chat of the message, so the reaction reaches every member of it. */
  chat_id?: number;
}

export interface MarkReadData {
  /** 1 to 100 message ids. */
  message_ids: number[];
  chat_id?: number;
}

/** Every client event with its data. */
export interface ClientEventMap {
  auth: AuthData;
  send_message: SendMessageData;
  typing: TypingData;
  add_reaction: AddReactionData;
  mark_read: MarkReadData;
}

/** The client events an application sends (`auth` is the client's own business). */
export type RequestEvent = Exclude<keyof ClientEventMap, "auth">;

/** What the `ack` of each request carries. */
export interface AckDataMap {
  send_message: { message_id: number };
  typing: Record<string, never>;
  add_reaction: Record<string, never>;
  mark_read: Record<string, never>;
}

// --- server → client ------------------------------------------------------------------------

export interface AuthSuccessData {
  user_id: number;
  name: string;
  phone: string | null;
  /** The user's stream: present when the gateway keeps events for resuming. */
  stream?: StreamPosition;
  /** Present when `auth` carried `since` on a new connection: whether every missed event follows. */
  recovered?: boolean;
}

/** A user as the backend describes it inside a message (more keys may be present). */
export interface MessageUser {
  id: number;
  full_name?: string;
  first_name?: string;
  last_name?: string;
  name?: string;
  phone?: string | null;
  [key: string]: unknown;
}

/** `new_message`: the backend's message JSON, exactly as the backend returned it. */
export interface Message {
  id: number;
  chat_id: number;
  text?: string | null;
  content?: string | null;
  user?: MessageUser;
  type?: string;
  reply_to?: unknown;
  attachments?: unknown[];
  reactions?: unknown[];
  read_count?: number;
  created_at?: string;
  edited_at?: string | null;
  is_edited?: boolean;
  [key: string]: unknown;
}

export interface UserTypingData {
  chat_id: number;
  user_id: number;
  name: string;
  is_typing: boolean;
}

export interface NewReactionData {
  message_id: number;
  user_id: number;
  name: string;
  emoji: string;
  chat_id: number | null;
}

export interface MessageReadData {
  message_ids: number[];
  user_id: number;
  name: string;
  chat_id: number | null;
}

/** `error`: what went wrong, with one of the {@link ErrorCode}s. */
export interface ErrorData {
  message: string;
  code: ErrorCode | string;
}

/** The error codes the gateway sends. */
export type ErrorCode =
  | "INVALID_JSON"
  | "UNKNOWN_EVENT"
  | "INVALID_PAYLOAD"
  | "INVALID_CHAT"
  | "AUTH_REQUIRED"
  | "AUTH_FAILED"
  | "AUTH_EXPIRED"
  | "ALREADY_AUTHENTICATED"
  | "NOT_A_MEMBER"
  | "FORBIDDEN"
  | "NOT_FOUND"
  | "VALIDATION_FAILED"
  | "RATE_LIMITED"
  | "TOO_MANY_CONNECTIONS"
  | "BACKEND_UNAVAILABLE";

/**
 * The events the gateway delivers to an application, with their data. `auth_success`, `ack` and
 * `error` answer the client's own requests and surface as promises and connection events.
 * Events the backend publishes through the gateway's internal API may have any other name:
 * declare them in the client's type parameter.
 */
export interface ServerEventMap {
  new_message: Message;
  user_typing: UserTypingData;
  new_reaction: NewReactionData;
  message_read: MessageReadData;
  /** The user's stream started over (events may have been lost): reload from the REST API. */
  stream_reset: StreamPosition;
}

/** One frame as it travels on the wire. */
export interface Frame<E extends string = string, D = unknown> {
  event: E;
  data: D;
  ref?: Ref;
  offset?: number;
}

/** The close codes with a meaning for the client. */
export const CloseCode = {
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
  REVOKED: 4001,
} as const;
