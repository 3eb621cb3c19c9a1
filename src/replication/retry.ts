/**
 * Redis calls from the pipeline never give up: a failed read or write waits for the circuit breaker and tries
 * again, so a Redis outage stalls the pipeline (and, through backpressure, the socket) instead of losing changes.
 * A lost lease is the one error that is not retried: the writer must stop.
 */
import { LeaseLostError } from "../store/writer.js";
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
      if (err instanceof LeaseLostError) {
        // Not a Redis failure (the writer must stop): no outcome to report, but never keep the half-open trial.
        ctx.breaker.abandon(trial);
        throw err;
      }
      ctx.breaker.failure();
      ctx.stats.retried++;
      const delay = backoffDelay(attempt, 50, 2000);
      if (attempt === 1 || attempt % 20 === 0) {
        ctx.log.warn({ err: (err as Error).message, attempt, breaker: ctx.breaker.state }, `${what} failed; retrying`);
      }
      await sleep(delay, ctx.signal);
    }
  }
}
