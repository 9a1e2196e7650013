/** A small typed event emitter: `on(event, handler)` returns the function that unsubscribes. */

// Handlers are stored untyped; `on` and `emit` keep each event's arguments typed.
type Listener = (...args: any[]) => void;

/** Handlers of each event: `M[K]` is the tuple of arguments the handlers of `K` receive. */
export class Emitter<M extends { [K in keyof M]: unknown[] }> {
  private readonly listeners = new Map<keyof M, Set<Listener>>();

  /** Calls `handler` on every `event` until the returned function is called. */
  on<K extends keyof M>(event: K, handler: (...args: M[K]) => void): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  /** Calls `handler` on the next `event` only. */
  once<K extends keyof M>(event: K, handler: (...args: M[K]) => void): () => void {
    const off = this.on(event, (...args: M[K]) => {
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
  protected emit<K extends keyof M>(event: K, ...args: M[K]): void {
    const set = this.listeners.get(event);
    if (set === undefined) return;
    for (const handler of [...set]) {
      try {
        handler(...args);
      } catch (err) {
        this.handlerFailed(err);
      }
    }
  }

  /** Reports the exception of a handler as an uncaught error (the console shows it). */
  protected handlerFailed(error: unknown): void {
    const report = (globalThis as { reportError?: (error: unknown) => void }).reportError;
    if (report !== undefined) {
      report(error);
    } else {
      setTimeout(() => {
        throw error;
      }, 0);
    }
  }
}
