/** Reconnect delays: exponential backoff with full jitter, capped. */

export interface BackoffOptions {
  /** Upper bound of the first delay, ms (default 500). */
  initialDelay?: number;
  /** Cap of every delay, ms (default 20000). */
  maxDelay?: number;
  /** Growth of the upper bound per failed attempt (default 2). */
  factor?: number;
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first): a uniformly random value
 * between 0 and `min(maxDelay, initialDelay * factor^attempt)` ("full jitter"), so that many
 * clients cut off at once do not come back at once.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {},
                             random: () => number = Math.random): number {
  const initial = options.initialDelay ?? 500;
  const cap = options.maxDelay ?? 20000;
  const factor = options.factor ?? 2;
  const ceiling = Math.min(cap, initial * Math.pow(factor, Math.max(0, attempt)));
  return Math.floor(random() * ceiling);
}
