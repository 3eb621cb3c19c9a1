/**
 * The REST side of Schematic used for bulk loads: count and page through companies and users. Every request is
 * retried with backoff (honouring Retry-After) under the loader's circuit breaker until it succeeds or the load is
 * cancelled; a rejected API key is the one permanent failure.
 */
import { AuthRejectedError } from "../datastream/client.js";
import type { CircuitBreaker } from "../util/breaker.js";
import type { Logger } from "../util/log.js";
import { backoffDelay, sleep } from "../util/time.js";
import { MalformedPageError, PageBody, pageRows } from "./page-rows.js";

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
  /** Each failed request (retried or not); `status` is the HTTP status when a response arrived. */
  onError?(status: number | undefined): void;
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

  /** One page's rows as JSON texts, each checked to parse (a malformed page is retried like a failed request). */
  async page(kind: RestKind, limit: number, offset: number, signal: AbortSignal): Promise<string[]> {
    return await this.rows(pagePath(kind, limit, offset), signal);
  }

  /**
   * One page's body as received, unparsed: lets the loader fetch pages concurrently but parse them one row at a
   * time (see page-rows.ts). On a malformed body, fall back to {@link page}.
   */
  async pageBody(
    kind: RestKind,
    limit: number,
    offset: number,
    signal: AbortSignal,
    into: PageBody,
  ): Promise<PageBody> {
    return await this.request(pagePath(kind, limit, offset), signal, (res) => readBody(res, into));
  }

  /** The rows (JSON texts) of those of `ids` that exist upstream (the list endpoint's `ids` filter; ≤ 100 a call). */
  async existing(kind: RestKind, ids: string[], signal: AbortSignal): Promise<string[]> {
    const query = ids.map((id) => `ids=${encodeURIComponent(id)}`).join("&");
    return await this.rows(`/${kind}?${query}&limit=${ids.length}&offset=0`, signal);
  }

  private rows(path: string, signal: AbortSignal): Promise<string[]> {
    return this.request(path, signal, async (res) => {
      const rows = pageRows(`GET ${path}`, await readBody(res, new PageBody()));
      const texts = Array.from({ length: rows.count }, (_, i) => rows.text(i));
      for (const text of texts) {
        try {
          JSON.parse(text);
        } catch (err) {
          throw new MalformedPageError(`GET ${path} returned a row that is not JSON: ${(err as Error).message}`);
        }
      }
      return texts;
    });
  }

  private get(path: string, signal: AbortSignal): Promise<unknown> {
    return this.request(path, signal, (res) => res.json());
  }

  /** GET with retries; resolves with what `read` makes of the successful response (a throw is retried). */
  private async request<T>(path: string, signal: AbortSignal, read: (res: Response) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (signal.aborted) throw new LoadCancelledError("load cancelled");
      const trial = await this.o.breaker.waitUntilClosed(signal);
      await this.acquire(signal);
      let retryAfterMs: number | undefined;
      let status: number | undefined;
      try {
        if (signal.aborted) throw new LoadCancelledError("load cancelled");
        this.requests++;
        const res = await fetch(this.o.apiUrl + path, {
          headers: { "X-Schematic-Api-Key": this.o.apiKey, Accept: "application/json", "User-Agent": this.o.userAgent },
          signal: AbortSignal.any([signal, AbortSignal.timeout(this.o.timeoutMs)]),
        });
        status = res.status;
        if (res.status === 401 || res.status === 403) {
          await res.body?.cancel();
          throw new AuthRejectedError(`the Schematic API rejected the API key (HTTP ${res.status} on GET ${path})`);
        }
        if (!res.ok) {
          retryAfterMs = parseRetryAfter(res.headers.get("retry-after"));
          await res.body?.cancel();
          throw new Error(`HTTP ${res.status}`);
        }
        const body = await read(res);
        this.o.breaker.success();
        return body;
      } catch (err) {
        if (!signal.aborted) this.o.onError?.(status);
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

function pagePath(kind: RestKind, limit: number, offset: number): string {
  return `/${kind}?limit=${limit}&offset=${offset}`;
}

/** Receives a response's body into `into` (see page-rows.ts). */
async function readBody(res: Response, into: PageBody): Promise<PageBody> {
  into.reset();
  if (res.body) for await (const chunk of res.body) into.append(chunk);
  return into;
}

export function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, 300_000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.min(Math.max(0, date - Date.now()), 300_000);
}
