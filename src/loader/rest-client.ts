/**
 * The REST side of Schematic used for bulk loads: count and page through companies and users. Every request is
 * retried with backoff (honouring Retry-After) under the loader's circuit breaker until it succeeds or the load is
 * cancelled; a rejected API key is the one permanent failure.
 */
import { AuthRejectedError } from "../datastream/client.js";
import type { CircuitBreaker } from "../util/breaker.js";
import type { Logger } from "../util/log.js";
import { backoffDelay, sleep } from "../util/time.js";

export type RestKind = "companies" | "users";

export class LoadCancelledError extends Error {}

export interface RestClientOptions {
  apiUrl: string;
  apiKey: string;
  timeoutMs: number;
  breaker: CircuitBreaker;
  log: Logger;
  /** Requests per second across all loader requests; 0 = unlimited. */
  rateLimitRps: number;
  maxConcurrent: number;
  userAgent: string;
}

export class RestClient {
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private nextSlot = 0;
  requests = 0;
  failures = 0;

  constructor(private readonly o: RestClientOptions) {}

  /** Requests allowed in flight at once. */
  get maxConcurrent(): number {
    return this.o.maxConcurrent;
  }

  async count(kind: RestKind, signal: AbortSignal): Promise<number> {
    const body = (await this.get(`/${kind}/count`, signal)) as { data?: { count?: unknown } };
    const count = body?.data?.count;
    if (typeof count !== "number" || !Number.isInteger(count) || count < 0) {
      throw new Error(`GET /${kind}/count returned no count`);
    }
    return count;
  }

  async page(kind: RestKind, limit: number, offset: number, signal: AbortSignal): Promise<unknown[]> {
    const body = (await this.get(`/${kind}?limit=${limit}&offset=${offset}`, signal)) as { data?: unknown };
    if (!Array.isArray(body?.data)) throw new Error(`GET /${kind} returned no data array`);
    return body.data;
  }

  /** GET with retries; resolves with the parsed JSON body. */
  private async get(path: string, signal: AbortSignal): Promise<unknown> {
    for (let attempt = 1; ; attempt++) {
      if (signal.aborted) throw new LoadCancelledError("load cancelled");
      const trial = await this.o.breaker.waitUntilClosed(signal);
      await this.acquire(signal);
      let retryAfterMs: number | undefined;
      try {
        if (signal.aborted) throw new LoadCancelledError("load cancelled");
        this.requests++;
        const res = await fetch(this.o.apiUrl + path, {
          headers: { "X-Schematic-Api-Key": this.o.apiKey, Accept: "application/json", "User-Agent": this.o.userAgent },
          signal: AbortSignal.any([signal, AbortSignal.timeout(this.o.timeoutMs)]),
        });
        if (res.status === 401 || res.status === 403) {
          await res.body?.cancel();
          throw new AuthRejectedError(`the Schematic API rejected the API key (HTTP ${res.status} on GET ${path})`);
        }
        if (!res.ok) {
          retryAfterMs = parseRetryAfter(res.headers.get("retry-after"));
          await res.body?.cancel();
          throw new Error(`HTTP ${res.status}`);
        }
        const body = await res.json();
        this.o.breaker.success();
        return body;
      } catch (err) {
        if (err instanceof AuthRejectedError || signal.aborted) {
          // A cancelled trial must not leave the (shared) breaker half-open for every later load.
          this.o.breaker.abandon(trial);
          throw signal.aborted ? new LoadCancelledError("load cancelled") : err;
        }
        this.failures++;
        this.o.breaker.failure();
        const delay = Math.max(retryAfterMs ?? 0, backoffDelay(attempt, 200, 30_000));
        this.o.log.warn(
          { path, attempt, delayMs: delay, err: (err as Error).message, breaker: this.o.breaker.state },
          "REST request failed; retrying",
        );
        await sleep(delay, signal);
      } finally {
        this.release();
      }
    }
  }

  /** Concurrency limit and token-bucket rate limit shared by every loader request. */
  private async acquire(signal: AbortSignal): Promise<void> {
    while (this.inFlight >= this.o.maxConcurrent) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.inFlight++;
    if (this.o.rateLimitRps > 0) {
      const interval = 1000 / this.o.rateLimitRps;
      const now = Date.now();
      // Allow a burst of up to one second's worth of requests, then space them out.
      this.nextSlot = Math.max(this.nextSlot, now - 1000 + interval);
      const wait = this.nextSlot - now;
      this.nextSlot += interval;
      if (wait > 0) await sleep(wait, signal);
    }
  }

  private release(): void {
    this.inFlight--;
    this.waiters.shift()?.();
  }
}

export function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, 300_000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.min(Math.max(0, date - Date.now()), 300_000);
}
