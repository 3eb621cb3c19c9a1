/**
 * A circuit breaker that never discards work: callers ask `waitUntilClosed()` before trying, and report each
 * outcome. After `threshold` consecutive failures it opens for `timeoutMs`; then one trial is let through
 * (half-open) and its outcome closes or re-opens it.
 */
import { EventEmitter } from "node:events";
import { sleep } from "./time.js";

export type BreakerState = "closed" | "open" | "half_open";

export class CircuitBreaker extends EventEmitter {
  private failures = 0;
  private openedAt = 0;
  private trialInFlight = false;
  state: BreakerState = "closed";

  constructor(
    readonly name: string,
    private readonly threshold: number,
    private readonly timeoutMs: number,
    private readonly now: () => number = Date.now,
  ) {
    super();
  }

  /**
   * Resolves when a call may be attempted (immediately while closed). Resolves true when the caller was let through
   * as the half-open trial: it must then report success() or failure(), or abandon() the trial if it does not call.
   */
  async waitUntilClosed(signal?: AbortSignal): Promise<boolean> {
    for (;;) {
      if (signal?.aborted) return false;
      if (this.state === "closed") return false;
      const remaining = this.openedAt + this.timeoutMs - this.now();
      if (this.state === "open" && remaining <= 0) this.transition("half_open");
      if (this.state === "half_open" && !this.trialInFlight) {
        this.trialInFlight = true;
        return true;
      }
      await sleep(this.state === "open" ? Math.max(remaining, 10) : 20, signal);
    }
  }

  /** The trial let through by waitUntilClosed() will not be attempted (cancelled): let another caller try. */
  abandon(trial: boolean): void {
    if (trial) this.trialInFlight = false;
  }

  success(): void {
    this.failures = 0;
    this.trialInFlight = false;
    if (this.state !== "closed") this.transition("closed");
  }

  failure(): void {
    this.failures++;
    this.trialInFlight = false;
    if (this.state === "half_open" || (this.state === "closed" && this.failures >= this.threshold)) {
      this.openedAt = this.now();
      this.transition("open");
    } else if (this.state === "open") {
      this.openedAt = this.now();
    }
  }

  private transition(to: BreakerState): void {
    const from = this.state;
    this.state = to;
    this.emit("state", to, from);
  }
}
