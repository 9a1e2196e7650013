/**
 * @buzzchat/gogate-client: a typed client for gogate, the BuzzChat WebSocket gateway.
 *
 * {@link GogateClient} holds one authenticated connection: requests resolve with their `ack`
 * or reject with a {@link GogateError}, the connection comes back after failures with
 * exponential backoff, an expired token is replaced on the live connection, and the user's
 * stream is resumed after a reconnect so no event is missed or seen twice.
 */

export { backoffDelay, type BackoffOptions } from "./backoff.js";
export {
  GogateClient,
  type ClientEvents,
  type ClientOptions,
  type ConnectedInfo,
  type ConnectionState,
  type DisconnectedInfo,
  type EventMeta,
  type LifecycleEvents,
  type ReconnectOptions,
  type ResetInfo,
  type ServerEvents,
  type TokenSource,
  type WebSocketConstructor,
} from "./client.js";
export { Emitter } from "./emitter.js";
export { ClientErrorCode, GogateError } from "./errors.js";
export * from "./protocol.js";
export { StreamCursor } from "./stream.js";
