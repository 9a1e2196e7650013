/**
 * Where the client stands in the user's stream: the epoch and the offset of the last event it
 * processed. The gateway numbers the events addressed to a user; on a reconnect the client
 * sends this position as `since` and the gateway replays what followed it.
 */

import type { StreamPosition } from "./protocol.js";

export class StreamCursor {
  private epoch: string | null = null;
  private offset = 0;

  constructor(start?: StreamPosition) {
    if (start !== undefined) this.moveTo(start);
  }

  /** The position to resume from, or `undefined` before the gateway offered a stream. */
  get position(): StreamPosition | undefined {
    return this.epoch === null ? undefined : { epoch: this.epoch, offset: this.offset };
  }

  /** Forgets the position: the next connection starts without `since`. */
  clear(): void {
    this.epoch = null;
    this.offset = 0;
  }

  /** Continues from `position` (a new stream, a reset, or one the application kept). */
  moveTo(position: StreamPosition): void {
    this.epoch = position.epoch;
    this.offset = position.offset;
  }

  /**
   * Whether an event at `offset` is new: stream events at or below the last processed offset
   * were already handed to the application and are dropped. Events without an offset are not
   * part of the stream and always pass.
   */
  accept(offset: number | undefined): boolean {
    if (offset === undefined || this.epoch === null) return true;
    if (offset <= this.offset) return false;
    this.offset = offset;
    return true;
  }
}
