/** The client's pure parts, in Node: backoff delays and the stream cursor. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay } from "../src/backoff.js";
import { Emitter } from "../src/emitter.js";
import { StreamCursor } from "../src/stream.js";

test("backoff delays are jittered below a ceiling that doubles up to the cap", () => {
  const top = () => 0.999999;
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 10].map((attempt) =>
    backoffDelay(attempt, { initialDelay: 100, maxDelay: 2000 }, top));
  assert.deepEqual(ceilings, [99, 199, 399, 799, 1599, 1999, 1999, 1999]);
  assert.equal(backoffDelay(3, { initialDelay: 100, maxDelay: 2000 }, () => 0), 0);
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const delay = backoffDelay(4, { initialDelay: 100, maxDelay: 2000 });
    assert.ok(delay >= 0 && delay < 1600, String(delay));
    seen.add(delay);
  }
  assert.ok(seen.size > 50, "delays are spread, not fixed");
});

test("the stream cursor passes each offset once and events without one always", () => {
  const cursor = new StreamCursor();
  assert.equal(cursor.position, undefined);
  cursor.moveTo({ epoch: "e1", offset: 4 });
  assert.deepEqual([3, 4, 5, 5, 6, 6, 7].map((o) => cursor.accept(o)),
                   [false, false, true, false, true, false, true]);
  assert.equal(cursor.accept(undefined), true);
  assert.deepEqual(cursor.position, { epoch: "e1", offset: 7 });
  cursor.moveTo({ epoch: "e2", offset: 0 });
  assert.equal(cursor.accept(1), true);
  cursor.clear();
  assert.equal(cursor.position, undefined);
});

test("the emitter calls handlers in order, until they unsubscribe, despite one that throws",
     () => {
  const failures: unknown[] = [];
  class Bus extends Emitter<{ ping: [n: number] }> {
    ping(n: number): void {
      this.emit("ping", n);
    }

    protected override handlerFailed(error: unknown): void {
      failures.push(error);
    }
  }
  const bus = new Bus();
  const calls: string[] = [];
  const offA = bus.on("ping", (n) => calls.push(`a${n}`));
  bus.on("ping", () => {
    throw new Error("handler failure");
  });
  bus.once("ping", (n) => calls.push(`once${n}`));
  bus.on("ping", (n) => calls.push(`c${n}`));
  bus.ping(1);
  offA();
  bus.ping(2);
  assert.deepEqual(calls, ["a1", "once1", "c1", "c2"]);
  assert.equal(failures.length, 2);
});
