/**
 * Keeps the writer's readiness marker in Redis equal to its latest view. Every change is written and retried until
 * it lands or the writer's tenure ends: a transient Redis error must not leave standbys reading a `stale_since` the
 * writer has long cleared (or missing one it set). Only the latest view matters, so changes made while a write is
 * in flight are folded into the one next write instead of queueing up.
 */

import { type RetryContext, withRetry } from "../replication/retry.js";
import type { Marker } from "../store/marker.js";

interface Waiter {
  version: number;
  resolve(): void;
  reject(err: unknown): void;
}

export class MarkerSync {
  private wanted: Marker | undefined;
  private version = 0;
  private stored = 0;
  private writing = false;
  private waiters: Waiter[] = [];

  constructor(
    /** Writes one marker (computing its expiry at the time of the attempt). */
    private readonly write: (marker: Marker) => Promise<void>,
    /** Its signal ends the tenure: pending writes then reject with StoppedError. */
    private readonly retry: RetryContext,
  ) {}

  /** Resolves once `marker`, or a later one, is in Redis; rejects (StoppedError) if the tenure ends first. */
  set(marker: Marker): Promise<void> {
    this.wanted = marker;
    const version = ++this.version;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ version, resolve, reject }));
    if (!this.writing) void this.run();
    return done;
  }

  private async run(): Promise<void> {
    this.writing = true;
    try {
      while (this.stored < this.version) {
        // Each attempt writes the latest version: a retry never puts back one that was superseded meanwhile.
        const version = await withRetry("writing the readiness marker", this.retry, async () => {
          const attempt = this.version;
          await this.write(this.wanted as Marker);
          return attempt;
        });
        this.stored = version;
        this.settle(
          (w) => w.version <= version,
          (w) => w.resolve(),
        );
      }
    } catch (err) {
      this.settle(
        () => true,
        (w) => w.reject(err),
      );
    } finally {
      this.writing = false;
    }
  }

  private settle(which: (w: Waiter) => boolean, how: (w: Waiter) => void): void {
    const done = this.waiters.filter(which);
    this.waiters = this.waiters.filter((w) => !which(w));
    for (const w of done) how(w);
  }
}
