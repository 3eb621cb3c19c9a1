/**
 * The circuit breaker and the pipeline's retry loop under cancellation (issue 4): a half-open trial that is never
 * attempted (its pipeline was stopped, or the write was refused for want of the lease) must not leave the shared
 * breaker half-open forever — that stalled every later writer tenure in the Redis fault tests — and a write refused
 * by the lease fence is retried, never dropped.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { StoppedError, withRetry } from "../src/replication/retry.js";
import { ReplicationStats } from "../src/replication/stats.js";
import { LeaseLostError } from "../src/store/writer.js";
import { CircuitBreaker } from "../src/util/breaker.js";
import { createLogger } from "../src/util/log.js";

const log = createLogger({ level: "silent", format: "json", secrets: [], name: "test" });

function openBreaker(now: { t: number }): CircuitBreaker {
  const breaker = new CircuitBreaker("redis", 1, 100, () => now.t);
  breaker.failure();
  assert.equal(breaker.state, "open");
  now.t += 101;
  return breaker;
}

describe("circuit breaker trials", () => {
  test("an abandoned half-open trial lets the next caller try", async () => {
    const now = { t: 0 };
    const breaker = openBreaker(now);
    assert.equal(await breaker.waitUntilClosed(), true, "the first caller is the trial");
    breaker.abandon(true);
    const second = await Promise.race([
      breaker.waitUntilClosed(),
      new Promise<string>((r) => setTimeout(() => r("stuck"), 500)),
    ]);
    assert.equal(second, true, "the next caller becomes the trial");
    breaker.success();
    assert.equal(breaker.state, "closed");
  });

  test("a half-open trial refused for want of the lease, then stopped, gives the trial back", async () => {
    const now = { t: 0 };
    const breaker = openBreaker(now);
    const abort = new AbortController();
    const ctx = { breaker, stats: new ReplicationStats(), log, signal: abort.signal };
    await assert.rejects(
      withRetry("writing", ctx, async () => {
        // The trial call is refused by the fence; the writer steps down meanwhile (its pipeline stops).
        abort.abort();
        throw new LeaseLostError();
      }),
      StoppedError,
    );
    assert.equal(breaker.state, "half_open");
    const next = await Promise.race([breaker.waitUntilClosed(), new Promise((r) => setTimeout(() => r("stuck"), 500))]);
    assert.equal(next, true, "the next tenure's first call is let through as the trial");
  });

  test("a write refused for want of the lease is retried, not dropped, and does not trip the breaker", async () => {
    const breaker = new CircuitBreaker("redis", 1, 1000);
    const stats = new ReplicationStats();
    const ctx = { breaker, stats, log, signal: new AbortController().signal };
    let calls = 0;
    const result = await withRetry("writing", ctx, async () => {
      calls++;
      if (calls < 3) throw new LeaseLostError();
      return "written";
    });
    assert.equal(result, "written");
    assert.equal(calls, 3);
    assert.equal(stats.retried, 2);
    assert.equal(breaker.state, "closed", "a fenced write says nothing about Redis health");
  });
});
