/**
 * Redis calls from the pipeline never give up: a failed read or write waits for the circuit breaker and tries
 * again, so a Redis outage stalls the pipeline (and, through backpressure, the socket) instead of losing changes.
 *
 * A write refused for want of the lease (LeaseLostError: fenced by the server, or not sent because the lease could
 * not be confirmed in time) is retried too, without counting against the breaker: whether this instance is still
 * the writer is the lease's decision alone. If the lease is really gone, the lease reports it within a renewal
 * period and the pipeline is stopped (its queued work is replayed by the next writer); if the refusal was a timing
 * artefact (a renewal confirmed just late), the retry goes through. Stepping down on the write error itself would
 * leave the replicator standing by while its lease, still renewed, keeps every other instance out. A control key
 * refused because the server changed (ServerChangedError: the caller learns the new one) is not Redis failing either.
 * A batch whose assumptions about the stored keys did not hold (StoredKeysChangedError) is handed back to the caller
 * at once: sending it again unchanged would fail again.
 */
import { ServerChangedError } from "../store/control-keys.js";
import { LeaseLostError, StoredKeysChangedError } from "../store/writer.js";
import type { CircuitBreaker } from "../util/breaker.js";
import type { Logger } from "../util/log.js";
import { backoffDelay, sleep } from "../util/time.js";
import type { ReplicationStats } from "./stats.js";

export class StoppedError extends Error {}

export interface RetryContext {
  breaker: CircuitBreaker;
  stats: ReplicationStats;
  log: Logger;
  signal: AbortSignal;
}

export async function withRetry<T>(what: string, ctx: RetryContext, call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const trial = await ctx.breaker.waitUntilClosed(ctx.signal);
    if (ctx.signal.aborted) {
      // Never keep the half-open trial without an outcome: the breaker would stay half-open for every later caller.
      ctx.breaker.abandon(trial);
      throw new StoppedError("pipeline stopped");
    }
    try {
      const result = await call();
      ctx.breaker.success();
      return result;
    } catch (err) {
      if (err instanceof StoredKeysChangedError) {
        // Redis answered; the batch must be computed again from what it stores (the caller's job, not a retry's).
        ctx.breaker.success();
        throw err;
      }
      if (err instanceof LeaseLostError || err instanceof ServerChangedError) {
        // Not a Redis failure: no outcome to report, but never keep the half-open trial.
        ctx.breaker.abandon(trial);
      } else {
        ctx.breaker.failure();
      }
      ctx.stats.retried++;
      const delay = backoffDelay(attempt, 50, 2000);
      if (attempt === 1 || attempt % 20 === 0) {
        ctx.log.warn({ err: (err as Error).message, attempt, breaker: ctx.breaker.state }, `${what} failed; retrying`);
      }
      await sleep(delay, ctx.signal);
    }
  }
}
